// rlock's LOCK.* commands driven from Node with ioredis (`redis.call('LOCK.ACQUIRE', ...)`), the
// way an application calls a module command.
//
// Run by tests/python/test_node_client.py against a module-loaded server:
//   RLOCK_SOCKET=/path/to/redis.sock (or RLOCK_PORT=6379 [RLOCK_HOST=127.0.0.1])
//   RLOCK_PROTOCOL=2|3 (default 3, ioredis 6's default)
//   node --test tests/node/lock.test.js
// The tests FLUSHALL the server's database 0.
//
// Waiting is always for a condition (INFO's blocked_clients, LOCK.INFO's waiters) with a
// deadline, never a fixed sleep as synchronisation.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const Redis = require("ioredis");

const DEADLINE_MS = 10_000;
const PROTOCOL = Number(process.env.RLOCK_PROTOCOL || 3);

function connection() {
  if (process.env.RLOCK_SOCKET) return { path: process.env.RLOCK_SOCKET };
  if (process.env.RLOCK_PORT) {
    return { host: process.env.RLOCK_HOST || "127.0.0.1", port: Number(process.env.RLOCK_PORT) };
  }
  throw new Error("set RLOCK_SOCKET (a unix socket path) or RLOCK_PORT to a server with the rlock module");
}

// Every client made by a test, disconnected after it (disconnect, not quit: a QUIT would wait
// behind a still-blocked command). Not twice: a second disconnect() of an ended client arms
// ioredis's 2 s disconnectTimeout timer on the closed stream, which holds the process up.
const made = [];
function client(options = {}) {
  const c = new Redis({ ...connection(), protocol: PROTOCOL, ...options });
  made.push(c);
  return c;
}
test.afterEach(() => {
  for (const c of made.splice(0)) if (c.status !== "end") c.disconnect();
});

let admin;
test.before(async () => {
  admin = new Redis({ ...connection(), protocol: PROTOCOL });
  await admin.ping();
});
test.beforeEach(async () => {
  await admin.flushall();
});
test.after(() => admin.disconnect());

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(probe, want, what) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const got = await probe();
    if (got === want) return;
    if (Date.now() > deadline) assert.fail(`${what} stayed ${got}, wanted ${want}`);
    await pause(2);
  }
}

async function blockedClients() {
  const info = await admin.info("clients");
  return Number(/^blocked_clients:(\d+)/m.exec(info)[1]);
}

const waitBlocked = (n) => waitUntil(blockedClients, n, "blocked_clients");

// LOCK.INFO as an object: a flat [field, value, ...] array in RESP2 and with ioredis's default
// replyMapping "legacy" in RESP3; an object with replyMapping "resp3".
function infoObject(reply) {
  if (!Array.isArray(reply)) return reply;
  assert.equal(reply.length % 2, 0);
  const out = {};
  for (let i = 0; i < reply.length; i += 2) out[reply[i]] = reply[i + 1];
  return out;
}

async function lockInfo(c, name) {
  return infoObject(await c.call("LOCK.INFO", name));
}

const waiters = async (name) => (await lockInfo(admin, name)).waiters;

// A promise with a deadline, so a lost wake-up fails the test instead of hanging it.
function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no reply within ${DEADLINE_MS} ms`)), DEADLINE_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Whether a promise has settled yet (without waiting for it).
async function settled(promise) {
  const marker = Symbol("pending");
  return (await Promise.race([promise.then(() => true, () => true), Promise.resolve(marker)])) !== marker;
}

test("commands and reply types", async () => {
  const c = client();
  assert.equal(await c.call("LOCK.ACQUIRE", "orders", "tok-1", 30), "OK");
  assert.equal(await c.call("LOCK.ACQUIRE", "orders", "tok-1", 30), "OK"); // same token: refresh
  assert.equal(await c.call("LOCK.ACQUIRE", "orders", "tok-2", 30), null); // held, no BLOCK
  assert.equal(await c.call("LOCK.OWNER", "orders"), "tok-1");
  assert.equal(await c.call("LOCK.RENEW", "orders", "tok-1", 60), 1);
  assert.equal(await c.call("LOCK.RENEW", "orders", "tok-2", 60), 0);

  const info = await lockInfo(c, "orders");
  assert.deepEqual(Object.keys(info).sort(), ["bound_to", "fence", "owner", "python", "ttl", "waiters"]);
  assert.equal(info.owner, "tok-1");
  assert.ok(info.ttl > 55_000 && info.ttl <= 60_000, `ttl ${info.ttl}`);
  assert.equal(info.waiters, 0);
  assert.equal(info.bound_to, null);
  assert.equal(info.fence, null);

  assert.equal(await c.call("LOCK.RELEASE", "orders", "tok-2"), 0);
  assert.equal(await c.call("LOCK.RELEASE", "orders", "tok-1"), 1);
  assert.equal(await c.call("LOCK.OWNER", "orders"), null);

  // BLOCK with a limit: null when the time is up
  await c.call("LOCK.ACQUIRE", "orders", "tok-1", 30);
  assert.equal(await c.call("LOCK.ACQUIRE", "orders", "tok-2", 30, "BLOCK", 50), null);

  // token *: the server makes one and replies it
  const made = await c.call("LOCK.ACQUIRE", "invoices", "*", 30);
  assert.equal(typeof made, "string");
  assert.equal(made.length, 24);
  assert.equal(await c.call("LOCK.OWNER", "invoices"), made);

  await assert.rejects(c.call("LOCK.ACQUIRE", "orders", "tok-1", 0), /ttl must be a positive integer/);
  assert.equal(await c.call("LOCK.RESETALL"), 2);
});

test("LOCK.INFO is an object with replyMapping resp3", { skip: PROTOCOL !== 3 && "RESP3 only" }, async () => {
  const c = client({ replyMapping: "resp3" });
  await c.call("LOCK.ACQUIRE", "orders", "tok-1", 30, "FENCE");
  const info = await c.call("LOCK.INFO", "orders");
  assert.ok(!Array.isArray(info) && typeof info === "object", `LOCK.INFO replied ${JSON.stringify(info)}`);
  assert.equal(info.owner, "tok-1");
  assert.equal(typeof info.fence, "number");
});

test("blocked acquires are woken by releases, first come first served", async () => {
  const holder = client();
  assert.equal(await holder.call("LOCK.ACQUIRE", "jobs", "holder", 30), "OK");
  // one connection per blocked command: ioredis pipelines commands on one connection, and a
  // blocked command holds up everything sent after it on its connection
  const pending = [];
  for (let i = 0; i < 3; i++) {
    pending.push(client().call("LOCK.ACQUIRE", "jobs", `w${i}`, 30, "BLOCK", 0));
    await waitBlocked(i + 1);
  }
  assert.equal(await waiters("jobs"), 3);

  assert.equal(await holder.call("LOCK.RELEASE", "jobs", "holder"), 1);
  assert.equal(await within(pending[0], "w0"), "OK");
  assert.equal(await holder.call("LOCK.OWNER", "jobs"), "w0");
  assert.equal(await settled(pending[1]), false);
  for (const i of [1, 2]) {
    assert.equal(await holder.call("LOCK.RELEASE", "jobs", `w${i - 1}`), 1);
    assert.equal(await within(pending[i], `w${i}`), "OK");
    assert.equal(await holder.call("LOCK.OWNER", "jobs"), `w${i}`);
  }
  await waitBlocked(0);

  // token * when blocking: the server-made token is the reply when handed the lock
  const star = client().call("LOCK.ACQUIRE", "jobs", "*", 30, "BLOCK", 0);
  await waitBlocked(1);
  assert.equal(await holder.call("LOCK.RELEASE", "jobs", "w2"), 1);
  const token = await within(star, "*");
  assert.equal(token.length, 24);
  assert.equal(await holder.call("LOCK.OWNER", "jobs"), token);
});

test("FENCE", async () => {
  const c = client();
  const f1 = await c.call("LOCK.ACQUIRE", "ledger", "a", 30, "FENCE");
  assert.equal(typeof f1, "number");
  assert.equal(await c.call("LOCK.ACQUIRE", "ledger", "a", 30, "FENCE"), f1); // the holder's retry
  assert.equal(await c.call("LOCK.ACQUIRE", "ledger", "b", 30, "FENCE"), null);

  const waiter = client().call("LOCK.ACQUIRE", "ledger", "b", 30, "BLOCK", 0, "FENCE");
  await waitBlocked(1);
  assert.equal(await c.call("LOCK.RELEASE", "ledger", "a"), 1);
  const f2 = await within(waiter, "fenced waiter");
  assert.ok(f2 > f1, `${f2} > ${f1}`);
  assert.equal((await lockInfo(c, "ledger")).fence, f2);

  // token * with FENCE: [token, fence]
  assert.equal(await c.call("LOCK.RELEASE", "ledger", "b"), 1);
  const [token, f3] = await c.call("LOCK.ACQUIRE", "ledger", "*", 30, "FENCE");
  assert.equal(token.length, 24);
  assert.ok(f3 > f2);
  assert.equal(await c.call("LOCK.ACQUIRE", "ledger", "*", 30, "FENCE"), null);
  const starWaiter = client().call("LOCK.ACQUIRE", "ledger", "*", 30, "FENCE", "BLOCK", 0);
  await waitBlocked(1);
  assert.equal(await c.call("LOCK.RELEASE", "ledger", token), 1);
  const [token2, f4] = await within(starWaiter, "* FENCE waiter");
  assert.notEqual(token2, token);
  assert.ok(f4 > f3);
});

test("BIND: the lock goes when the acquiring connection closes, and the waiter is served", async () => {
  const holder = client();
  assert.equal(await holder.call("LOCK.ACQUIRE", "nightly", "job-1", 3600, "BIND"), "OK");
  const holderId = await holder.client("ID");
  assert.equal((await lockInfo(admin, "nightly")).bound_to, holderId);

  const waiter = client();
  const waiterId = await waiter.client("ID");
  const pending = waiter.call("LOCK.ACQUIRE", "nightly", "job-2", 3600, "BLOCK", 0, "BIND", "FENCE");
  await waitBlocked(1);

  holder.disconnect(); // the "crash"
  assert.equal(typeof (await within(pending, "BIND waiter")), "number");
  assert.equal(await admin.call("LOCK.OWNER", "nightly"), "job-2");
  const info = await lockInfo(admin, "nightly");
  assert.equal(info.bound_to, waiterId);
  assert.ok(info.ttl > 3_500_000);

  waiter.disconnect();
  await waitUntil(() => admin.call("LOCK.OWNER", "nightly"), null, "LOCK.OWNER");
});

// Client-side pitfalls, shown as they behave with ioredis's defaults.

test("pitfall: commandTimeout shorter than BLOCK rejects, yet the server keeps the waiter", async () => {
  await admin.call("LOCK.ACQUIRE", "q", "holder", 30);
  const c = client({ commandTimeout: 100 });
  await assert.rejects(c.call("LOCK.ACQUIRE", "q", "impatient", 30, "BLOCK", 0), /Command timed out/);
  // ioredis only stopped waiting: the connection and the server-side waiter are still there ...
  assert.equal(await waiters("q"), 1);
  assert.equal(await admin.call("LOCK.RELEASE", "q", "holder"), 1);
  // ... which is handed the lock, although the application was told the acquire failed
  assert.equal(await admin.call("LOCK.OWNER", "q"), "impatient");
});

test("pitfall: a blocked acquire whose connection drops is sent again, at the back of the queue", async () => {
  const holder = client();
  await holder.call("LOCK.ACQUIRE", "q", "holder", 30);
  const first = client(); // autoResendUnfulfilledCommands: true (the default)
  const firstId = await first.client("ID");
  const firstAcquire = first.call("LOCK.ACQUIRE", "q", "first", 30, "BLOCK", 0);
  await waitBlocked(1);
  const second = client().call("LOCK.ACQUIRE", "q", "second", 30, "BLOCK", 0);
  await waitBlocked(2);

  const reconnected = new Promise((resolve) => first.once("ready", resolve));
  assert.equal(await admin.client("KILL", "ID", firstId), 1);
  await within(reconnected, "ioredis reconnect");
  await waitBlocked(2); // "first" is queued again, now behind "second"

  assert.equal(await holder.call("LOCK.RELEASE", "q", "holder"), 1);
  assert.equal(await within(second, "second"), "OK");
  assert.equal(await settled(firstAcquire), false);
  assert.equal(await holder.call("LOCK.RELEASE", "q", "second"), 1);
  assert.equal(await within(firstAcquire, "first"), "OK");
});

test("pitfall: on one ioredis client, commands sent after a blocked acquire wait behind it", async () => {
  await admin.call("LOCK.ACQUIRE", "q", "holder", 30);
  const shared = client();
  await shared.ping(); // connected, so both commands below go out at once, in order
  const acquire = shared.call("LOCK.ACQUIRE", "q", "shared", 30, "BLOCK", 0);
  const lookup = shared.call("LOCK.OWNER", "q");
  await waitBlocked(1);
  assert.equal(await settled(lookup), false);
  assert.equal(await admin.call("LOCK.RELEASE", "q", "holder"), 1);
  assert.equal(await within(acquire, "acquire"), "OK");
  // answered only after the hand-over
  assert.equal(await within(lookup, "LOCK.OWNER"), "shared");
});
