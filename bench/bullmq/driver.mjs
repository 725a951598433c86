// BullMQ side of the queue benchmarks (bench/bullmqlib.py runs it; see docs/benchmarks.md).
//
//   node driver.mjs add  QUEUE N [--warmup W] [--parallel P]   single Queue.add calls
//   node driver.mjs work QUEUE CONCURRENCY [--expect N]        one Worker, a no-op processor
//
// Env: BULLMQ_PREFIX = the folder npm installed bullmq and ioredis into (outside the repo);
// BENCH_REDIS_URL = the redis-server; BENCH_COUNT_FILE (work) = where the worker writes its
// request counters, on SIGUSR2 and at exit. `add` prints one JSON line: latencies (ms, of the
// adds after the warm-up; sequential only when --parallel is 1) and the counters over them.
// Every option is BullMQ's default (jobs kept on completion, events stream on) except the
// worker's concurrency.
import { createRequire } from 'node:module';
import { writeFileSync, renameSync } from 'node:fs';
import net from 'node:net';

const require = createRequire(`${process.env.BULLMQ_PREFIX}/node_modules/`);
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

// Requests sent, counted like benchlib.Counters counts redis-py's: `commands` = commands
// written (each command of a pipeline or MULTI counts; EVALSHA is one), `round_trips` = socket
// writes (ioredis writes a single command, or a whole pipeline, with one write).
const counts = { commands: 0, round_trips: 0 };
const sendCommand = IORedis.prototype.sendCommand;
IORedis.prototype.sendCommand = function (...args) {
  counts.commands += 1;
  return sendCommand.apply(this, args);
};
const write = net.Socket.prototype.write;
net.Socket.prototype.write = function (...args) {
  counts.round_trips += 1;
  return write.apply(this, args);
};

const url = new URL(process.env.BENCH_REDIS_URL);
const connection = { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null };

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

async function add(queueName, n) {
  const warmup = option('--warmup', 0);
  const parallel = option('--parallel', 1);
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();
  for (let i = 0; i < warmup; i++) await queue.add('noop', { i: -1 - i });
  const before = { ...counts };
  const latencies = [];
  for (let start = 0; start < n; start += parallel) {
    const batch = [];
    const t0 = process.hrtime.bigint();
    for (let i = start; i < Math.min(n, start + parallel); i++) batch.push(queue.add('noop', { i }));
    await Promise.all(batch);
    if (parallel === 1) latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const after = { ...counts };
  await queue.close();
  const delta = { commands: after.commands - before.commands, round_trips: after.round_trips - before.round_trips };
  process.stdout.write(JSON.stringify({ latencies, counts: delta }) + '\n');
}

async function work(queueName, concurrency) {
  const expect = option('--expect', 0);
  const countFile = process.env.BENCH_COUNT_FILE;
  const dump = () => {
    if (!countFile) return;
    writeFileSync(`${countFile}.tmp`, JSON.stringify(counts));
    renameSync(`${countFile}.tmp`, countFile);
  };
  const worker = new Worker(queueName, async (job) => job.data.i, { connection, concurrency });
  let done = 0;
  let closing = false;
  const finish = async () => {
    if (closing) return;
    closing = true;
    await worker.close(); // waits for the jobs in flight
    dump();
    process.exit(0);
  };
  worker.on('completed', () => {
    done += 1;
    if (expect && done >= expect) finish();
  });
  worker.on('error', (err) => console.error(err));
  process.on('SIGUSR2', dump); // SIGUSR1 is Node's debugger signal
  process.on('SIGTERM', finish);
  process.on('SIGINT', finish);
  await worker.waitUntilReady();
}

const [mode, queueName, arg] = process.argv.slice(2);
if (mode === 'add') await add(queueName, Number(arg));
else if (mode === 'work') await work(queueName, Number(arg));
else {
  console.error('usage: driver.mjs add QUEUE N [--warmup W] [--parallel P] | work QUEUE CONCURRENCY [--expect N]');
  process.exit(2);
}
