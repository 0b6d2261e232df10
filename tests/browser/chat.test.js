/* The chat web client (plugins/chat/web) in a real browser against a real
 * pierd: headless Chromium, driven by playwright-core, opens the demo page
 * served by pierd's WebSocket listener, over http:// + ws:// and over
 * https:// + wss:// with a certificate made here, while a raw TCP client
 * speaks the chat packets in the same room. Every page and the TCP client
 * must see exactly the expected lines; then the chat plugin is reloaded
 * through pierctl and the same connections must go on chatting (no page saw
 * a close). One screenshot is kept. Run through tests/browser/run (ctest
 * does); `--help` lists the arguments. */
'use strict';

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const USAGE = `usage: chat.test.js --modules DIR --pierd PATH --pierctl PATH --plugins DIR
                    --web DIR --backend io_uring|epoll [--shot FILE.png]
  --modules  the node_modules holding playwright-core (tests/browser/run passes it)
  --pierd, --pierctl, --plugins  a build's pierd, pierctl and plugin folder (chat.so)
  --web      the page's folder (plugins/chat/web), served as the listeners' "static"
  --backend  the io_backend pierd runs with
  --shot     where to save a screenshot of one page after the chat`;

const CHROMIUM = '/usr/bin/chromium';
const TOTAL_MS = 300000; /* the whole test; ctest's TIMEOUT (600 s) is above it */
const STEP_MS = 30000;   /* any one wait (generous: sanitizer builds on a busy machine) */
const C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102;
/* How a kicked page reports its close: config/README.md maps a kick to 1008,
 * the reason is pier_reason's text; the words for the code are chat.js's. */
const KICK_CLOSE = { meaning: 'policy violation', what: 'code 1008: kicked by an operator' };

class Failure extends Error {}
let daemon = null;      /* the pierd under test, once started */
const errors = [];      /* what the pages reported: uncaught exceptions, console errors */
function fail(msg) { throw new Failure(msg); }

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    if (!a.startsWith('--') || i + 1 >= argv.length) {
      console.error(`chat.test.js: bad argument ${JSON.stringify(a)}\n${USAGE}`);
      process.exit(2);
    }
    out[a.slice(2)] = argv[++i];
  }
  for (const k of ['modules', 'pierd', 'pierctl', 'plugins', 'web', 'backend']) {
    if (!out[k]) {
      console.error(`chat.test.js: --${k} is required\n${USAGE}`);
      process.exit(2);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const { chromium } = require(path.join(path.resolve(args.modules), 'playwright-core'));

const started = Date.now();
function step(msg) {
  console.log(`[${args.backend} ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/* ---- the certificate ---- */

function makeCert(dir) {
  const cert = path.join(dir, 'cert.pem'), key = path.join(dir, 'key.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt',
                             'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
                             '-subj', '/CN=localhost',
                             '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
                             '-addext', 'extendedKeyUsage=serverAuth',
                             '-keyout', key, '-out', cert],
                 { timeout: 30000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    fail(`openssl req could not make a certificate: ${e.stderr || e.message}`);
  }
  /* Chromium trusts exactly this key (--ignore-certificate-errors-spki-list),
   * so the wss:// page proves pierd served our certificate. */
  const spki = new crypto.X509Certificate(fs.readFileSync(cert)).publicKey
    .export({ type: 'spki', format: 'der' });
  return { cert, key, spki: crypto.createHash('sha256').update(spki).digest('base64') };
}

/* ---- pierd ---- */

class Pierd {
  constructor(config) {
    this.log = '';
    this.exit = null;
    this.waiters = [];
    const argv = ['--config', config];
    /* As root, pierd would drop to "nobody", who may not read the build
     * tree: the test keeps root, as tools/run does. */
    if (process.geteuid && process.geteuid() === 0) argv.push('--user', 'root');
    /* The daemon dies with this process, even when it is killed. */
    const [cmd, cargv] = fs.existsSync('/usr/bin/setpriv')
      ? ['/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', args.pierd, ...argv]]
      : [args.pierd, argv];
    this.proc = spawn(cmd, cargv, { stdio: ['pipe', 'pipe', 'pipe'] });
    const take = (d) => {
      this.log += d.toString();
      this.poke();
    };
    this.proc.stdout.on('data', take);
    this.proc.stderr.on('data', take);
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, sig) => {
        this.exit = sig ? `signal ${sig}` : `status ${code}`;
        this.code = code;
        this.poke();
        resolve();
      });
    });
    this.proc.on('error', (e) => {
      this.exit = `not started: ${e.message}`;
      this.poke();
    });
  }

  poke() {
    for (const w of this.waiters.splice(0))
      w();
  }

  tail(n = 40) {
    return this.log.split('\n').slice(-n).join('\n');
  }

  /* Resolves once the log has text; fails when pierd exits first. */
  async waitLog(text, ms) {
    const end = Date.now() + ms;
    while (!this.log.includes(text)) {
      if (this.exit)
        fail(`pierd ended (${this.exit}) before logging "${text}"`);
      const left = end - Date.now();
      if (left <= 0)
        fail(`pierd did not log "${text}" within ${ms} ms`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  /* The port of the listener pierd describes as what, e.g.
   * "u16_size_id, WebSocket /chat, TLS"; 0 when none is logged. */
  port(what) {
    for (const m of this.log.matchAll(/listening on 127\.0\.0\.1:(\d+) \((.*)\)$/gm))
      if (m[2] === what)
        return Number(m[1]);
    return 0;
  }

  /* SIGTERM, then SIGKILL after ms; returns pierd's exit ("status 0", ...). */
  async stop(ms) {
    if (!this.exit) {
      this.proc.kill('SIGTERM');
      let timer;
      const done = await Promise.race([this.exited.then(() => true),
                                       new Promise((r) => { timer = setTimeout(r, ms, false); })]);
      clearTimeout(timer);
      if (!done) {
        this.proc.kill('SIGKILL');
        await this.exited;
        return `no exit within ${ms} ms of SIGTERM (killed)`;
      }
    }
    return this.exit;
  }
}

/* ---- the raw TCP chat client ---- */

function packet(id, text) {
  const body = Buffer.from(text, 'utf8');
  const p = Buffer.alloc(4 + body.length);
  p.writeUInt16LE(p.length, 0);
  p.writeUInt16LE(id, 2);
  body.copy(p, 4);
  return p;
}

/* What a received packet is, in the same words as a page's line. */
function describe(id, body) {
  if (id === S_CHAT && body.length >= 8)
    return { kind: 'chat', sid: body.readBigUInt64LE(0).toString(), text: body.subarray(8).toString('utf8') };
  if (id === S_SYSTEM)
    return { kind: 'system', text: body.toString('utf8') };
  return { kind: `packet ${id}`, text: body.toString('hex') };
}

class TcpChat {
  static connect(port) {
    return withTimeout(new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(new TcpChat(s)));
      s.once('error', reject);
    }), STEP_MS, `TCP connect to 127.0.0.1:${port}`);
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.got = [];
    this.closed = null;
    this.waiters = [];
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4) {
        const size = this.buf.readUInt16LE(0);
        if (size < 4) {
          this.closed = `a packet with size ${size}`;
          sock.destroy();
          break;
        }
        if (this.buf.length < size)
          break;
        this.got.push(describe(this.buf.readUInt16LE(2), this.buf.subarray(4, size)));
        this.buf = this.buf.subarray(size);
      }
      this.poke();
    });
    sock.on('close', () => { this.closed = this.closed || 'closed by pierd'; this.poke(); });
    sock.on('error', (e) => { this.closed = e.message; });
  }

  poke() {
    for (const w of this.waiters.splice(0))
      w();
  }

  send(id, text) {
    this.sock.write(packet(id, text));
  }

  async waitCount(n, ms) {
    const end = Date.now() + ms;
    while (this.got.length < n && !this.closed && Date.now() < end) {
      await new Promise((resolve) => {
        const t = setTimeout(resolve, end - Date.now());
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  close() {
    this.sock.destroy();
  }
}

/* ---- expectations ---- */

const show = (v) => JSON.stringify(v);

/* Someone who sees the room: a page or the TCP client, with every line it
 * must have seen so far, in order. */
class Viewer {
  constructor(label, lines, count) {
    this.label = label;
    this.expected = [];
    this.lines = lines;  /* async () => what it has seen */
    this.count = count;  /* async (n, ms) => waits until it has seen n lines */
  }

  expect(line) {
    this.expected.push(line);
  }

  async check() {
    await this.count(this.expected.length, STEP_MS);
    const seen = await this.lines();
    const n = Math.max(seen.length, this.expected.length);
    for (let i = 0; i < n; i++) {
      if (show(seen[i]) !== show(this.expected[i])) {
        fail(`${this.label}: line ${i + 1} is ${seen[i] ? show(seen[i]) : 'missing'}, ` +
             `expected ${this.expected[i] ? show(this.expected[i]) : 'nothing more'}\n` +
             `  seen:     ${seen.map(show).join('\n            ')}\n` +
             `  expected: ${this.expected.map(show).join('\n            ')}`);
      }
    }
  }
}

/* A page's log as lines: {kind, sid?, who?, text}. */
function pageLines(page) {
  return page.$$eval('#log > li', (lis) => lis.map((li) => {
    const kind = ['chat', 'system', 'conn', 'error'].find((k) => li.classList.contains(k)) || li.className;
    const line = { kind };
    if (kind === 'chat') {
      line.sid = li.dataset.sid;
      line.who = li.querySelector('.who').textContent;
    }
    line.text = li.querySelector('.text').textContent;
    return line;
  }));
}

/* ---- the browser ---- */

async function openPage(ctx, url, label) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => errors.push(`${label}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning')
      errors.push(`${label}: console ${m.type()}: ${m.text()}`);
  });
  const res = await page.goto(url, { timeout: STEP_MS });
  if (!res || res.status() !== 200)
    fail(`${label}: GET ${url} answered ${res ? res.status() : 'nothing'}`);
  const type = res.headers()['content-type'] || '';
  if (!type.startsWith('text/html'))
    fail(`${label}: GET ${url} has Content-Type ${show(type)}, expected text/html`);
  await page.waitForSelector('#status[data-state="open"]', { timeout: STEP_MS }).catch(async () => {
    fail(`${label}: the page did not connect: status ${show(await page.textContent('#status-text'))}`);
  });
  const viewer = new Viewer(label, () => pageLines(page), (n, ms) =>
    page.waitForFunction((k) => document.querySelectorAll('#log > li').length >= k, n,
                         { timeout: ms }).catch(() => {}));
  const override = new URL(url).searchParams.get('ws');
  const wsUrl = override || url.replace(/^http/, 'ws').replace(/\/$/, '/chat');
  viewer.expect({ kind: 'conn', text: `connected to ${wsUrl}` });
  return { page, viewer, label, sid: null, name: null };
}

/* Joins room as name; returns the session id its join notice names. */
/* Joins room as name; returns the session id its join notice names. */
async function join(p, name, room) {
  await p.page.fill('#name', name);
  await p.page.fill('#room', room);
  await p.page.click('#join-button');
  p.name = name;
  return joinedAs(p, room);
}

/* The page's next line must be its own join notice: learns p.sid from it. */
async function joinedAs(p, room) {
  const n = p.viewer.expected.length + 1;
  await p.viewer.count(n, STEP_MS);
  const lines = await p.viewer.lines();
  const last = lines[n - 1];
  const m = last && last.kind === 'system' && /^(\d+) joined (.*)$/.exec(last.text);
  if (!m || m[2] !== room)
    fail(`${p.label}: after joining ${room}, line ${n} is ${show(last)}, expected "<sid> joined ${room}"`);
  p.sid = m[1];
  const whoami = await p.page.textContent('#whoami');
  if (whoami !== `In ${room} as ${p.name} #${p.sid}.`)
    fail(`${p.label}: #whoami says ${show(whoami)} after the join`);
  return p.sid;
}

/* A page's connection state, as #status shows it. */
function status(p) {
  return p.page.$eval('#status', (e) => ({
    state: e.dataset.state, connects: e.dataset.connects, closes: e.dataset.closes,
    text: e.querySelector('#status-text').textContent,
    reconnect: !document.getElementById('reconnect').hidden,
  }));
}

/* Runs pierctl --socket sock with words; returns its standard output. */
function pierctl(sock, words) {
  try {
    return execFileSync(args.pierctl, ['--socket', sock, ...words],
                        { timeout: 20000, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    fail(`pierctl ${words.join(' ')} failed (${e.status === null ? e.signal : 'exit ' + e.status}): ` +
         `${e.stdout || ''}${e.stderr || ''}`);
  }
}

async function say(p, text) {
  await p.page.fill('#text', text);
  await p.page.press('#text', 'Enter');
  const left = await p.page.inputValue('#text');
  if (left !== '')
    fail(`${p.label}: the message box still holds ${show(left)} after Enter`);
}

/* ---- the test ---- */

async function main(cleanups) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pier-browser-'));
  cleanups.push(async () => fs.rmSync(tmp, { recursive: true, force: true }));

  step('certificate for 127.0.0.1 and localhost');
  const tls = makeCert(tmp);

  const sock = path.join(tmp, 'pierd.sock');
  const web = path.resolve(args.web);
  const config = {
    workers: 2,
    io_backend: args.backend,
    log_level: 'info',
    admin_socket: sock,
    plugins: [{ name: 'chat', path: path.join(path.resolve(args.plugins), 'chat.so') }],
    listeners: [
      { address: '127.0.0.1', port: 0, plugin: 'chat', framing: 'u16_size_id' },
      { address: '127.0.0.1', port: 0, plugin: 'chat', framing: 'u16_size_id',
        transport: 'websocket', path: '/chat', static: web },
      { address: '127.0.0.1', port: 0, plugin: 'chat', framing: 'u16_size_id',
        transport: 'websocket', path: '/chat', static: web,
        tls: { cert: tls.cert, key: tls.key } },
    ],
  };
  const configPath = path.join(tmp, 'server.json');
  fs.writeFileSync(configPath, JSON.stringify(config, null, 2));

  step(`pierd --config ${configPath} (${args.backend})`);
  const pierd = daemon = new Pierd(configPath);
  cleanups.push(async () => {
    step('stopping pierd');
    const how = await pierd.stop(15000);
    step(`pierd: ${how}`);
    if (how !== 'status 0')
      fail(`pierd did not stop cleanly on SIGTERM (${how})`);
  });
  await pierd.waitLog('pierd ready', 30000);
  await pierd.waitLog(' ready (pierctl)', STEP_MS);
  const [tcpPort, wsPort, wssPort] = ['u16_size_id', 'u16_size_id, WebSocket /chat',
                                       'u16_size_id, WebSocket /chat, TLS'].map((what) => {
    const port = pierd.port(what);
    if (!port)
      fail(`pierd logged no "listening on 127.0.0.1:PORT (${what})"`);
    return port;
  });
  step(`listening: tcp ${tcpPort}, ws ${wsPort}, wss ${wssPort}`);

  const tcp = await TcpChat.connect(tcpPort);
  cleanups.push(async () => tcp.close());
  const tv = new Viewer('TCP client', async () => tcp.got, (n, ms) => tcp.waitCount(n, ms));
  const viewers = [tv];
  tcp.send(C_JOIN, 'lobby');
  await tcp.waitCount(1, STEP_MS);
  const tm = tcp.got[0] && tcp.got[0].kind === 'system' && /^(\d+) joined lobby$/.exec(tcp.got[0].text);
  if (!tm)
    fail(`TCP client: its join was answered with ${show(tcp.got[0])}${tcp.closed ? ` (${tcp.closed})` : ''}`);
  const tcpSid = tm[1];
  tv.expect({ kind: 'system', text: `${tcpSid} joined lobby` });

  const udd = path.join(tmp, 'chromium-profile');
  step(`chromium ${CHROMIUM}, profile ${udd}`);
  const ctx = await chromium.launchPersistentContext(udd, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           '--disable-dev-shm-usage', `--ignore-certificate-errors-spki-list=${tls.spki}`],
    viewport: { width: 900, height: 680 },
    timeout: 60000,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  cleanups.push(async () => {
    step('closing chromium');
    await withTimeout(ctx.close(), 15000, 'closing chromium');
  });

  /* Someone joins: everyone already there sees the notice. */
  const joined = async (p, name) => {
    const sid = await join(p, name, 'lobby');
    viewers.push(p.viewer);
    for (const v of viewers)
      v.expect({ kind: 'system', text: `${sid} joined lobby` });
    for (const v of viewers)
      await v.check();
  };
  /* Someone talks: everyone in the room (the sender too) sees it. */
  const talked = async (p, text) => {
    if (p === 'tcp') {
      tcp.send(C_CHAT, text);
      for (const v of viewers)
        v.expect(v === tv ? { kind: 'chat', sid: tcpSid, text }
                          : { kind: 'chat', sid: tcpSid, who: `#${tcpSid}`, text });
    } else {
      await say(p, text);
      for (const v of viewers)
        v.expect(v === tv ? { kind: 'chat', sid: p.sid, text: `${p.name}: ${text}` }
                          : { kind: 'chat', sid: p.sid, who: p.name, text });
    }
    for (const v of viewers)
      await v.check();
  };

  step(`two pages on http://127.0.0.1:${wsPort}/ (ws://)`);
  const alice = await openPage(ctx, `http://127.0.0.1:${wsPort}/`, 'page alice (ws)');
  const bob = await openPage(ctx, `http://127.0.0.1:${wsPort}/`, 'page bob (ws)');
  await joined(alice, 'alice');
  await joined(bob, 'bob');
  await talked(alice, 'hello from alice');
  await talked(bob, 'hi alice, bob here: naïve café ✓ 𝔭𝔦𝔢𝔯');
  await talked('tcp', 'the tcp client says hi');

  step(`two pages on https://127.0.0.1:${wssPort}/ (wss://)`);
  const carol = await openPage(ctx, `https://127.0.0.1:${wssPort}/`, 'page carol (wss)');
  const dave = await openPage(ctx, `https://127.0.0.1:${wssPort}/`, 'page dave (wss)');
  await joined(carol, 'carol');
  await joined(dave, 'dave');
  await talked(carol, 'carol over tls');
  await talked(dave, 'dave over tls ✓');
  await talked('tcp', 'tcp to everyone');

  step(`pierctl --socket ${sock} reload chat`);
  const out = pierctl(sock, ['reload', 'chat']);
  if (!/^reloaded chat: generation 2\b/.test(out))
    fail(`pierctl reload chat printed ${show(out)}, expected "reloaded chat: generation 2, ..."`);
  step(out.trim());
  await talked(alice, 'after the reload, alice');
  await talked(dave, 'after the reload, dave');
  await talked('tcp', 'after the reload, tcp');
  await talked(bob, 'bye');

  for (const p of [alice, bob, carol, dave]) {
    const st = await status(p);
    if (st.state !== 'open' || st.connects !== '1' || st.closes !== '0' || st.text !== 'connected' ||
        st.reconnect)
      fail(`${p.label}: the connection did not stay up through the reload: status ${show(st)}`);
  }
  if (tcp.closed)
    fail(`TCP client: ${tcp.closed}`);

  /* ?ws= points the page elsewhere: a page from the ws:// listener talks
   * through the wss:// one (by name: the certificate is for localhost too). */
  const wssByName = `wss://localhost:${wssPort}/chat`;
  step(`a page on http://127.0.0.1:${wsPort}/?ws=${wssByName}`);
  const erin = await openPage(ctx, `http://127.0.0.1:${wsPort}/?ws=${encodeURIComponent(wssByName)}`,
                              'page erin (?ws=)');
  await joined(erin, 'erin');
  await talked(erin, 'erin came through ?ws=');

  /* The server ends bob's session: his page says so, and its Reconnect
   * button brings him back into the room, under a new session id. */
  const hex = BigInt(bob.sid).toString(16).padStart(16, '0');
  step(`pierctl kick ${hex} (bob), then Reconnect`);
  const kicked = pierctl(sock, ['kick', hex]);
  if (kicked !== `kicked ${hex}\n`)
    fail(`pierctl kick ${hex} printed ${show(kicked)}, expected "kicked ${hex}"`);
  viewers.splice(viewers.indexOf(bob.viewer), 1);
  for (const v of viewers)
    v.expect({ kind: 'system', text: `${bob.sid} left lobby` });
  bob.viewer.expect({ kind: 'conn', text: `connection closed: ${KICK_CLOSE.meaning} (${KICK_CLOSE.what})` });
  for (const v of [...viewers, bob.viewer])
    await v.check();
  const down = await status(bob);
  if (down.state !== 'closed' || down.text !== `disconnected (${KICK_CLOSE.what})` || !down.reconnect ||
      down.closes !== '1')
    fail(`${bob.label}: after the kick the status is ${show(down)}, expected "disconnected ` +
         `(${KICK_CLOSE.what})" and a Reconnect button`);
  if (!(await bob.page.isDisabled('#text')))
    fail(`${bob.label}: the message box is still enabled after the close`);
  const oldSid = bob.sid;
  await bob.page.click('#reconnect');
  await bob.page.waitForSelector('#status[data-state="open"]');
  bob.viewer.expect({ kind: 'conn', text: `connected to ws://127.0.0.1:${wsPort}/chat` });
  await joinedAs(bob, 'lobby');
  if (bob.sid === oldSid)
    fail(`${bob.label}: the new connection has the old session id ${oldSid}`);
  viewers.push(bob.viewer);
  for (const v of viewers)
    v.expect({ kind: 'system', text: `${bob.sid} joined lobby` });
  for (const v of viewers)
    await v.check();
  await talked(bob, 'bob is back');
  const up = await status(bob);
  if (up.state !== 'open' || up.connects !== '2' || up.closes !== '1' || up.reconnect)
    fail(`${bob.label}: after Reconnect the status is ${show(up)}`);

  if (errors.length)
    fail(`the pages reported errors:\n  ${errors.join('\n  ')}`);

  if (args.shot) {
    fs.mkdirSync(path.dirname(path.resolve(args.shot)), { recursive: true });
    await alice.page.screenshot({ path: args.shot });
    step(`screenshot: ${path.resolve(args.shot)}`);
  }
  step('ok');
}

/* Runs main, then its cleanups (in reverse) exactly once, whether it ends,
 * fails, overruns TOTAL_MS or is stopped by a signal; exits 0 or 1. */
async function run() {
  const cleanups = [];
  let failed = null, aborted = null, finishing = null;
  const finish = () => finishing || (finishing = (async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch (e) {
        failed = failed || e;
      }
    }
  })());
  const end = () => {
    /* After an abort, whatever main threw is only its consequence. */
    const err = aborted ? new Failure(aborted) : failed;
    if (!err)
      process.exit(0);
    console.error(`[${args.backend}] FAIL: ${err instanceof Failure ? err.message : err.stack}`);
    if (errors.length)
      console.error(`the pages reported:\n  ${errors.join('\n  ')}`);
    if (daemon)
      console.error(`pierd (${daemon.exit || 'running'}), the end of its log:\n${daemon.tail()}`);
    process.exit(1);
  };
  const abort = async (why) => {
    if (aborted)
      return;
    aborted = why;
    await finish();
    end();
  };
  setTimeout(() => abort(`the test took over ${TOTAL_MS / 1000} s`), TOTAL_MS).unref();
  for (const sig of ['SIGINT', 'SIGTERM'])
    process.on(sig, () => abort(`stopped by ${sig}`));
  try {
    await main(cleanups);
  } catch (e) {
    failed = e;
  }
  await finish();
  if (!aborted)
    end();
}

run();
