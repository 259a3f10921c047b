// heapsnap's target-side agent. Run by the target's own Node.js binary, next to it:
//   node -e <this file> -- <subcommand> [args...]
// No shell, no npm packages, only /proc. Structured replies are one JSON line on stdout;
// `stream` writes raw bytes. Exit codes: 0 ok, 2 bad usage, 3 target gone, 4 refused.
'use strict';
const fs = require('fs');
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
  // A zombie has exited: it keeps its /proc entry until reaped.
  const state = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
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
  const inodes = socketInodes(pid);
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
    listening: listeners(pid).filter((l) => inodes.has(l.inode)).map((l) => l.port),
    memory: cgroupMemory(pid),
    mem_available_bytes: avail === null ? null : Number(avail.split(/\s+/)[0]) * 1024,
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
  const ports = {};
  for (const l of listeners(wanted !== null && processes.length ? wanted : self)) ports[l.port] = true;
  out({ processes, listening: Object.keys(ports).map(Number) });
}

function activate(args) {
  const pid = Number(args[0]);
  if (!alive(pid)) { out({ error: 'gone' }); process.exit(3); }
  process._debugProcess(pid);
  out({ ok: true });
}

function signal(args) {
  const pid = Number(args[0]);
  if (!alive(pid)) { out({ error: 'gone' }); process.exit(3); }
  process.kill(pid, args[1]);
  out({ ok: true });
}

// Checks the directory as the target's own user sees it (uid, groups, read-only mounts).
function writable(args) {
  const pid = Number(args[0]);
  const dir = args[1];
  const status = read(`/proc/${pid}/status`);
  if (status === null) { out({ error: 'gone' }); process.exit(3); }
  const uid = Number(field(status, 'Uid').split(/\s+/)[1]);
  const gid = Number(field(status, 'Gid').split(/\s+/)[1]);
  const groups = (field(status, 'Groups') || '').split(/\s+/).filter((g) => g).map(Number);
  try {
    if (process.getuid() === 0 && uid !== 0) {
      process.setgroups(groups);
      process.setgid(gid);
      process.setuid(uid);
    }
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    out({ writable: true });
  } catch (e) {
    out({ writable: false, code: e.code || String(e) });
  }
}

function snapshotFiles(dir, pid) {
  const re = new RegExp(`^Heap\\.\\d{8}\\.\\d{6}\\.${pid}\\.\\d+\\.\\d+\\.heapsnapshot$`);
  try { return fs.readdirSync(dir).filter((n) => re.test(n)); } catch (e) { return []; }
}
function openBy(pid, file) {
  let fds = [];
  try { fds = fs.readdirSync(`/proc/${pid}/fd`); } catch (e) { return false; }
  for (const fd of fds) {
    try { if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === file) return true; } catch (e) { /* closed */ }
  }
  return false;
}

// Lists the target's snapshot files, sends the signal, waits for the new file to be
// written and closed, printing {"size": n} lines meanwhile, then {"path": p}.
function signalWait(args) {
  const [pidText, sig, dir, timeoutText] = args;
  const pid = Number(pidText);
  const deadline = Date.now() + Number(timeoutText) * 1000;
  const before = new Set(snapshotFiles(dir, pid));
  if (!alive(pid)) { out({ error: 'gone' }); process.exit(3); }
  process.kill(pid, sig);
  let file = null;
  let lastSize = -1;
  const tick = () => {
    if (file === null) {
      const fresh = snapshotFiles(dir, pid).filter((n) => !before.has(n));
      if (fresh.length) file = path.join(dir, fresh.sort().pop());
    }
    const size = file === null ? 0 : (() => { try { return fs.statSync(file).size; } catch (e) { return 0; } })();
    if (size !== lastSize) { out({ size }); lastSize = size; }
    if (!alive(pid)) {
      // A partial snapshot is useless: remove whatever the dead process started writing.
      for (const name of snapshotFiles(dir, pid).filter((n) => !before.has(n))) {
        try { fs.unlinkSync(path.join(dir, name)); } catch (e) { /* already gone */ }
      }
      out({ error: 'gone' });
      process.exit(3);
    }
    if (file !== null && size > 0 && !openBy(pid, file)) { out({ path: file, size }); return; }
    if (Date.now() > deadline) { out({ error: 'timeout', path: file }); process.exit(4); }
    setTimeout(tick, 50);
  };
  tick();
}

function stream(args) {
  const file = args[0];
  const input = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  input.on('error', (e) => { process.stderr.write(String(e) + '\n'); process.exit(3); });
  input.pipe(process.stdout);
  input.on('end', () => { if (args[1] === '--delete') fs.unlinkSync(file); });
}

function remove(args) {
  try { fs.unlinkSync(args[0]); } catch (e) { if (e.code !== 'ENOENT') throw e; }
  out({ ok: true });
}

const commands = { probe, activate, signal, writable, 'signal-wait': signalWait, stream, remove };
if (!commands[sub]) {
  process.stderr.write(`heapsnap agent: unknown subcommand ${sub}\n`);
  process.exit(2);
}
commands[sub](argv.slice(1));
