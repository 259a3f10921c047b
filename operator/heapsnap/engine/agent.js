// heapsnap's target-side agent. Run by the target's own Node.js binary, next to it:
//   node -e <this file> -- <subcommand> [args...]
// No shell, no npm packages, only /proc. Structured replies are one JSON line on stdout;
// `tail` and `signal-follow` write raw bytes. Exit codes: EXIT below (heapsnap/_agent_exit.py
// declares the same table for Python; a test checks that they agree).
'use strict';
// 0 ok, 1 unexpected error, 2 bad usage, 3 target gone, 4 timed out waiting for the snapshot
// file, 5 stopped (SIGTERM).
const EXIT = Object.freeze({ OK: 0, FAILED: 1, USAGE: 2, GONE: 3, TIMEOUT: 4, STOPPED: 5 });
const fs = require('fs');
const os = require('os');
const path = require('path');

const argv = process.argv.slice(1);
const sub = argv[0];

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
function read(file) {
  try { return fs.readFileSync(file, 'utf8'); } catch (e) { return null; }
}
function alive(pid) {
  const st = read(`/proc/${pid}/stat`);
  if (st === null) return false;
  // A zombie has exited: it keeps its /proc entry until reaped. An exiting process
  // (PF_EXITING, 0x4 in the flags) closes its files before it is a zombie.
  const [state, , , , , , flags] = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return state !== 'Z' && state !== 'X' && (Number(flags) & 4) === 0;
}
function field(status, name) {
  const m = status && status.match(new RegExp(`^${name}:\\s*(.*)$`, 'm'));
  return m ? m[1].trim() : null;
}
function splitNul(text) {
  return text === null ? [] : text.split('\0').filter((s) => s.length > 0);
}
function socketInodes(pid) {
  const inodes = new Set();
  let fds = [];
  try { fds = fs.readdirSync(`/proc/${pid}/fd`); } catch (e) { return inodes; }
  for (const fd of fds) {
    try {
      const m = fs.readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]);
    } catch (e) { /* fd closed meanwhile */ }
  }
  return inodes;
}
// Listening TCP sockets of the network namespace `pid` lives in: [{port, address, inode}].
function listeners(pid) {
  const result = [];
  for (const name of ['tcp', 'tcp6']) {
    const text = read(`/proc/${pid}/net/${name}`);
    if (text === null) continue;
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== '0A') continue;
      const [addr, port] = cols[1].split(':');
      result.push({ port: parseInt(port, 16), address: addr, inode: cols[9] });
    }
  }
  return result;
}
function cgroupMemory(pid) {
  const text = read(`/proc/${pid}/cgroup`);
  const m = text && text.match(/^0::(.*)$/m);
  // Inside a container the cgroup namespace root is mounted at /sys/fs/cgroup.
  for (const dir of m ? [path.join('/sys/fs/cgroup', m[1]), '/sys/fs/cgroup'] : []) {
    const max = read(path.join(dir, 'memory.max'));
    const current = read(path.join(dir, 'memory.current'));
    if (current !== null) {
      return { max: max === null || max.trim() === 'max' ? null : Number(max.trim()), current: Number(current.trim()), cgroup: dir };
    }
  }
  // cgroup v1: the memory controller's own hierarchy.
  const v1 = text && text.match(/^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m);
  if (v1) {
    for (const dir of [path.join('/sys/fs/cgroup/memory', v1[1]), '/sys/fs/cgroup/memory']) {
      const max = read(path.join(dir, 'memory.limit_in_bytes'));
      const current = read(path.join(dir, 'memory.usage_in_bytes'));
      if (current !== null) {
        const limit = max === null ? null : Number(max.trim());
        return { max: limit !== null && limit < 2 ** 62 ? limit : null, current: Number(current.trim()), cgroup: dir };
      }
    }
  }
  return { max: null, current: null };
}
// Whether `pid` lives in another namespace of `kind` than this agent (a container's own
// mounts, a systemd service's PrivateTmp, another network). Unreadable: taken as shared.
function otherNamespace(pid, kind) {
  try { return fs.readlinkSync(`/proc/${pid}/ns/${kind}`) !== fs.readlinkSync(`/proc/self/ns/${kind}`); }
  catch (e) { return false; }
}
function isNode(exe, comm) {
  return /(^|\/)node(js)?[0-9.]*( \(deleted\))?$/.test(exe || '') || comm === 'node';
}
function describe(pid) {
  const status = read(`/proc/${pid}/status`);
  if (status === null) return null;
  let exe = null;
  let cwd = null;
  try { exe = fs.readlinkSync(`/proc/${pid}/exe`); } catch (e) { /* kernel thread or no permission */ }
  try { cwd = fs.readlinkSync(`/proc/${pid}/cwd`); } catch (e) { /* no permission */ }
  const env = splitNul(read(`/proc/${pid}/environ`));
  const nodeOptions = env.find((e) => e.startsWith('NODE_OPTIONS='));
  const tmpdir = env.find((e) => e.startsWith('TMPDIR='));
  const comm = (read(`/proc/${pid}/comm`) || '').trim();
  const meminfo = read('/proc/meminfo');
  const avail = field(meminfo, 'MemAvailable');
  return {
    pid,
    argv: splitNul(read(`/proc/${pid}/cmdline`)),
    exe,
    comm,
    node: isNode(exe, comm),
    cwd,
    uid: Number((field(status, 'Uid') || '-1').split(/\s+/)[1]),
    sigcgt: field(status, 'SigCgt'),
    vm_rss_bytes: Number((field(status, 'VmRSS') || '0 kB').split(/\s+/)[0]) * 1024,
    node_options: nodeOptions ? nodeOptions.slice('NODE_OPTIONS='.length) : null,
    tmpdir: tmpdir ? tmpdir.slice('TMPDIR='.length) : null,
    listening: ownPorts(pid),
    memory: cgroupMemory(pid),
    mem_available_bytes: avail === null ? null : Number(avail.split(/\s+/)[0]) * 1024,
    other_mounts: otherNamespace(pid, 'mnt'),
    other_network: otherNamespace(pid, 'net'),
  };
}

function probe(args) {
  const self = process.pid;
  const wanted = args.length ? Number(args[0]) : null;
  const pids = wanted !== null ? [wanted] : fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  const processes = [];
  for (const pid of pids) {
    if (pid === self || pid === process.ppid || !alive(pid)) continue;
    if (wanted === null) {
      let exe = null;
      try { exe = fs.readlinkSync(`/proc/${pid}/exe`); } catch (e) { /* kernel thread or no permission */ }
      if (!isNode(exe, (read(`/proc/${pid}/comm`) || '').trim())) continue;
    }
    const info = describe(pid);
    if (info === null) continue;
    if (wanted !== null || info.node) processes.push(info);
  }
  // Which binary runs this agent: the caller may reuse it for the target without asking again.
  const agent = { exec_path: process.execPath };
  out({ processes, agent });
}

// The ports `pid` listens on itself (the network namespace may hold others').
function ownPorts(pid) {
  const inodes = socketInodes(pid);
  return listeners(pid).filter((l) => inodes.has(l.inode)).map((l) => l.port);
}
function taken(pid, port) {
  return port !== 0 && listeners(pid).some((l) => l.port === port) && !ownPorts(pid).includes(port);
}

// activate PID PORT WAIT: opens the inspector of PID (SIGUSR1's work, done the way that
// needs no shell) and waits here for its new listening port, so that the caller pays one
// round trip instead of one per look. PORT is the one it should take, to tell when another
// process holds it.
async function activate(args) {
  const pid = Number(args[0]);
  const port = Number(args[1]);
  const deadline = Date.now() + Number(args[2]) * 1000;
  if (!alive(pid)) { out({ error: 'gone' }); process.exit(EXIT.GONE); }
  if (taken(pid, port)) { out({ ports: [], taken: true }); return; }
  const before = new Set(ownPorts(pid));
  process._debugProcess(pid);
  for (;;) {
    if (!alive(pid)) { out({ error: 'gone' }); process.exit(EXIT.GONE); }
    const fresh = ownPorts(pid).filter((p) => !before.has(p));
    if (fresh.length || Date.now() > deadline) { out({ ports: fresh, taken: !fresh.length && taken(pid, port) }); return; }
    await sleep(20);
  }
}

// closed PID PORT WAIT: waits until PID no longer listens on PORT (or is gone).
async function closed(args) {
  const pid = Number(args[0]);
  const port = Number(args[1]);
  const deadline = Date.now() + Number(args[2]) * 1000;
  for (;;) {
    if (!alive(pid) || !ownPorts(pid).includes(port)) { out({ closed: true }); return; }
    if (Date.now() > deadline) { out({ closed: false }); return; }
    await sleep(20);
  }
}

// writable PID DIR...: checks each directory as the target's own user sees it (uid,
// groups, read-only mounts), with its free space and whether it is tmpfs (memory).
function writable(args) {
  const pid = Number(args[0]);
  const dirs = args.slice(1);
  const status = read(`/proc/${pid}/status`);
  if (status === null) { out({ error: 'gone' }); process.exit(EXIT.GONE); }
  const uid = Number(field(status, 'Uid').split(/\s+/)[1]);
  const gid = Number(field(status, 'Gid').split(/\s+/)[1]);
  const groups = (field(status, 'Groups') || '').split(/\s+/).filter((g) => g).map(Number);
  let refused = null;
  try {
    if (process.getuid() === 0 && uid !== 0) {
      process.setgroups(groups);
      process.setgid(gid);
      process.setuid(uid);
    }
  } catch (e) {
    refused = e.code || String(e); // no CAP_SETUID: the target's view cannot be checked
  }
  const answers = dirs.map((dir) => {
    if (refused !== null) return { dir, writable: false, code: refused };
    try {
      fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
      // Free space and filesystem type where this Node.js can tell (statfs is Node 18.15+).
      const st = fs.statfsSync ? fs.statfsSync(dir) : null;
      return { dir, writable: true, free: st ? st.bavail * st.bsize : null, tmpfs: st ? st.type === 0x01021994 : null };
    } catch (e) {
      return { dir, writable: false, code: e.code || String(e) };
    }
  });
  out({ dirs: answers });
}

function snapshotFiles(dir, pid) {
  const re = new RegExp(`^Heap\\.\\d{8}\\.\\d{6}\\.${pid}\\.\\d+\\.\\d+\\.heapsnapshot$`);
  try { return fs.readdirSync(dir).filter((n) => re.test(n)); } catch (e) { return []; }
}
// Whether `pid` still has the file `stat` describes open (by inode: it is unlinked).
function holds(pid, stat) {
  let fds = [];
  try { fds = fs.readdirSync(`/proc/${pid}/fd`); } catch (e) { return false; }
  for (const fd of fds) {
    try {
      const s = fs.statSync(`/proc/${pid}/fd/${fd}`);
      if (s.ino === stat.ino && s.dev === stat.dev) return true;
    } catch (e) { /* closed meanwhile */ }
  }
  return false;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
function send(chunk) {
  return new Promise((resolve, reject) => process.stdout.write(chunk, (e) => (e ? reject(e) : resolve())));
}
function gone(message) {
  process.stderr.write(message + '\n');
  process.exit(EXIT.GONE);
}
// Waits for `pick()` to name the file `pid` is writing, opens it and unlinks it at once
// (nothing is left behind, whoever dies), then sends its bytes on stdout as they are
// written, until `pid` has closed it and every byte is out. Reading from the disk gives
// the writer no backpressure and costs the target no memory, unlike inspector chunks.
// SIGTERM (the capture was stopped) ends it at once, but not before the file it waits
// for has been unlinked: a target busy in JavaScript writes the snapshot asked of it
// later, and it would stay in its directory (EXIT.STOPPED).
let stopping = false;
function stopOnSigterm() { process.on('SIGTERM', () => { stopping = true; }); }
async function follow(pid, pick, deadline, onGone, since = null) {
  // 10 nice levels below the target (or lower already): V8 is still writing, and the
  // reading can wait for it; the target resumes sooner.
  try { os.setPriority(Math.min(19, Math.max(os.getPriority(), os.getPriority(pid) + 10))); } catch (e) { /* as it is */ }
  let file = null;
  while (file === null) {
    if (!alive(pid)) { onGone(); gone(`process ${pid} exited before writing its snapshot`); }
    if (Date.now() > deadline) { process.stderr.write('timeout: no snapshot file appeared\n'); process.exit(EXIT.TIMEOUT); }
    file = pick();
    if (file === null) await sleep(20);
  }
  const fd = fs.openSync(file, 'r');
  fs.unlinkSync(file);
  if (stopping) process.exit(EXIT.STOPPED);
  const stat = fs.fstatSync(fd);
  const started = since === null ? Date.now() : since;
  let writtenSeconds = null;
  let closed = false;
  // One buffer, reused once each write has flushed: the agent runs in the target's
  // container and its memory counts against the target's limit.
  const chunk = Buffer.allocUnsafe(1 << 20);
  for (;;) {
    if (stopping) process.exit(EXIT.STOPPED);
    const n = fs.readSync(fd, chunk, 0, chunk.length, null);
    if (n > 0) { await send(chunk.subarray(0, n)); continue; }
    if (closed) break;
    if (!alive(pid)) gone(`process ${pid} exited while writing its snapshot`);
    if (Date.now() > deadline) { process.stderr.write('timeout: the snapshot is still being written\n'); process.exit(EXIT.TIMEOUT); }
    closed = !holds(pid, stat);
    // Closed by an exit (killed mid-write) is not written: look once more.
    if (closed && !alive(pid)) gone(`process ${pid} exited while writing its snapshot`);
    if (closed) writtenSeconds = (Date.now() - started) / 1000;
    else await sleep(20);
  }
  fs.closeSync(fd);
  // How long the process took to write the file, from the signal (or its appearance).
  process.stderr.write(JSON.stringify({ written_seconds: writtenSeconds }) + '\n');
}

// tail PID FILE TIMEOUT: FILE is about to be written by PID (writeHeapSnapshot).
function tail(args) {
  const [pidText, file, timeoutText] = args;
  const deadline = Date.now() + Number(timeoutText) * 1000;
  const exists = () => (fs.existsSync(file) ? file : null);
  stopOnSigterm();
  return follow(Number(pidText), exists, deadline, () => {});
}

// signal-follow PID SIGNAL DIR TIMEOUT: sends the snapshot signal and follows the file
// the process writes in DIR.
function signalFollow(args) {
  const [pidText, sig, dir, timeoutText] = args;
  const pid = Number(pidText);
  const deadline = Date.now() + Number(timeoutText) * 1000;
  const before = new Set(snapshotFiles(dir, pid));
  const fresh = () => snapshotFiles(dir, pid).filter((n) => !before.has(n)).sort();
  if (!alive(pid)) gone(`process ${pid} is gone`);
  stopOnSigterm();
  process.kill(pid, sig);
  const signalled = Date.now();
  const pick = () => { const names = fresh(); return names.length ? path.join(dir, names.pop()) : null; };
  const removeStarted = () => {
    for (const name of fresh()) { try { fs.unlinkSync(path.join(dir, name)); } catch (e) { /* gone */ } }
  };
  return follow(pid, pick, deadline, removeStarted, signalled);
}

function remove(args) {
  try { fs.unlinkSync(args[0]); } catch (e) { if (e.code !== 'ENOENT') throw e; }
  out({ ok: true });
}

const commands = { probe, activate, closed, writable, tail, 'signal-follow': signalFollow, remove };
if (!commands[sub]) {
  process.stderr.write(`heapsnap agent: unknown subcommand ${sub}\n`);
  process.exit(EXIT.USAGE);
}
Promise.resolve(commands[sub](argv.slice(1))).catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(EXIT.FAILED);
});
