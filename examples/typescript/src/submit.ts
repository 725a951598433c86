// Submit a `claude_code` run through the Herder HTTP API and stream its events to completion.
// The types come from the server's OpenAPI document (`npm run generate`), so a payload that does
// not match the task's pydantic model fails to compile here, not at run time.
//
//   HERDER_API_URL=http://127.0.0.1:8090 HERDER_API_TOKEN=hdr_... node dist/submit.js "Fix the bug"
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
type ClaudeCodeSubmission = Schemas["SubmitClaudeCode"];
type Job = Schemas["Job"];
type ClaudeCodeResult = Schemas["ClaudeCodeResult"];

/** One server-sent event of GET /v1/jobs/{id}/events, discriminated by `event`. */
type JobEvent = Schemas["JobEvent"];

const baseUrl = process.env.HERDER_API_URL ?? "http://127.0.0.1:8090";
const token = process.env.HERDER_API_TOKEN ?? "";
const queue = process.env.HERDER_QUEUE ?? "default";
const prompt = process.argv[2] ?? "Say hello";
// Drop the first event stream after this many events, to show a resume with Last-Event-ID.
const dropAfter = Number(process.env.HERDER_DROP_AFTER ?? "0");

const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

async function submit(): Promise<string> {
  const body: ClaudeCodeSubmission = {
    task: "claude_code",
    payload: { prompt, max_turns: 10 },
    labels: { source: "typescript-example" },
  };
  const { data, error, response } = await api.POST("/v1/queues/{queue}/jobs", {
    params: { path: { queue } },
    body,
  });
  if (error !== undefined || data === undefined || !("id" in data)) {
    throw new Error(`submit failed: HTTP ${response.status} ${JSON.stringify(error)}`);
  }
  return data.id;
}

/** Parse one SSE frame ("id: ..\nevent: ..\ndata: ..") into an event; comments give null. */
function parseFrame(frame: string): JobEvent | null {
  const fields: Record<string, string> = {};
  for (const line of frame.split("\n")) {
    const at = line.indexOf(": ");
    if (at > 0) fields[line.slice(0, at)] = line.slice(at + 2);
  }
  if (fields.event === undefined || fields.data === undefined) return null;
  // The server's contract (JobEvent in the OpenAPI document) says what each frame holds.
  return { event: fields.event, id: fields.id ?? "", data: JSON.parse(fields.data) } as JobEvent;
}

/** Follow the job's events until its final `result`, reconnecting with Last-Event-ID. */
async function follow(jobId: string, onEvent: (e: JobEvent) => void): Promise<Job> {
  let lastId: string | undefined;
  let seen = 0;
  for (let connection = 1; connection <= 20; connection++) {
    const { response } = await api.GET("/v1/jobs/{job_id}/events", {
      params: { path: { job_id: jobId } },
      headers: lastId === undefined ? {} : { "Last-Event-ID": lastId },
      parseAs: "stream",
    });
    if (!response.ok || response.body === null) {
      throw new Error(`events failed: HTTP ${response.status}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let dropped = false;
    while (!dropped) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event === null) continue;
        lastId = event.id;
        onEvent(event);
        if (event.event === "result") return event.data;
        if (event.event === "gone") throw new Error(`job ${jobId} is gone`);
        if (event.event === "error") throw new Error(event.data.detail);
        if (++seen === dropAfter) {
          await reader.cancel(); // simulate a dropped connection, then resume from lastId
          dropped = true;
          break;
        }
      }
    }
  }
  throw new Error("the event stream kept ending before the result");
}

const jobId = await submit();
console.log(JSON.stringify({ submitted: jobId }));
const job = await follow(jobId, (e) => console.log(JSON.stringify({ event: e.event, id: e.id, data: e.data })));
const result = job.result as ClaudeCodeResult | null;
console.log(JSON.stringify({ final: job.state, attempts: job.attempts, cost_usd: result?.total_cost_usd ?? null }));
process.exit(job.state === "succeeded" ? 0 : 1);
