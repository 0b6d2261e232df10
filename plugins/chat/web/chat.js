/* pier chat: the browser client of the chat plugin. It speaks the plugin's
 * u16_size_id packets (plugins/chat/README.md) over one WebSocket, one
 * packet per binary message, to ws(s)://<this host>/chat or to the URL given
 * as ?ws=. No build step, nothing loaded from elsewhere.
 *
 * The protocol has no user names, so a name is a convention of this page:
 * with one set, a line goes out as "name: text", and lines of that form are
 * shown with the name (every line also shows its sender's session id, which
 * the server vouches for). TCP clients see the text as it was sent. */
'use strict';

(function () {
  const C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102;
  const ROOM_MAX = 32;   /* bytes, the plugin's limit */
  const TEXT_MAX = 512;  /* bytes, the plugin's limit */
  const NAME_MAX = 24;   /* characters, this page's own limit */
  const LOG_MAX = 500;   /* lines kept on the page */
  const NAMED = /^([^:\n]{1,24}): ([\s\S]+)$/;

  /* RFC 6455's names for the close codes a user may meet. */
  const CLOSE_MEANING = {
    1000: 'normal closure',
    1001: 'going away',
    1002: 'protocol error',
    1003: 'unsupported data',
    1005: 'no status given',
    1006: 'connection lost',
    1007: 'invalid data',
    1008: 'policy violation',
    1009: 'message too big',
    1011: 'server error',
    1015: 'TLS handshake failed',
  };

  const enc = new TextEncoder();
  const dec = new TextDecoder('utf-8', { fatal: false });
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), statusText: $('status-text'), reconnect: $('reconnect'),
    join: $('join'), name: $('name'), room: $('room'), joinButton: $('join-button'),
    whoami: $('whoami'), log: $('log'), composer: $('composer'), text: $('text'),
    count: $('count'), send: $('send'), hint: $('hint'),
  };

  let ws = null;
  let url = null;
  let mySid = null;       /* decimal string, learnt from our first join notice */
  let room = null;        /* the room we are in */
  let pendingRoom = null; /* a join sent, its answer not yet seen */
  let wantRoom = null;    /* rejoined after a reconnect */
  let name = '';
  let connects = 0, closes = 0;

  /* ---- packets ---- */

  function packet(id, bytes) {
    const buf = new Uint8Array(4 + bytes.length);
    const dv = new DataView(buf.buffer);
    dv.setUint16(0, buf.length, true);
    dv.setUint16(2, id, true);
    buf.set(bytes, 4);
    return buf.buffer;
  }

  function sendPacket(id, bytes) {
    if (!ws || ws.readyState !== WebSocket.OPEN)
      return false;
    ws.send(packet(id, bytes));
    return true;
  }

  function onMessage(ev) {
    if (!(ev.data instanceof ArrayBuffer)) {
      addLine('error', 'ignored a text message from the server');
      return;
    }
    const n = ev.data.byteLength;
    const dv = new DataView(ev.data);
    if (n < 4 || dv.getUint16(0, true) !== n) {
      addLine('error', `ignored a malformed packet (${n} bytes)`);
      return;
    }
    const id = dv.getUint16(2, true);
    const body = new Uint8Array(ev.data, 4);
    if (id === S_CHAT && body.length >= 8) {
      addChat(dv.getBigUint64(4, true).toString(), dec.decode(body.subarray(8)));
    } else if (id === S_SYSTEM) {
      onNotice(dec.decode(body));
    } else {
      addLine('error', `ignored a packet with id ${id} (${n} bytes)`);
    }
  }

  function onNotice(text) {
    const joined = /^(\d+) joined ([\s\S]+)$/.exec(text);
    const mine = joined && pendingRoom !== null && joined[2] === pendingRoom &&
                 (mySid === null || joined[1] === mySid);
    if (mine) {
      /* Our own join notice is the first one we get from a room. */
      mySid = joined[1];
      room = pendingRoom;
      wantRoom = room;
      pendingRoom = null;
      update();
      ui.text.focus();
    } else if (pendingRoom !== null && (text === 'already in ' + pendingRoom ||
                                        text.startsWith('room name must be'))) {
      pendingRoom = null;
      update();
    }
    const sid = /^(\d+) /.exec(text);
    addLine('system', text, sid ? sid[1] : null);
  }

  /* ---- connection ---- */

  function wsUrl() {
    const override = new URLSearchParams(location.search).get('ws');
    if (override) {
      try {
        const u = new URL(override, location.href);
        if (u.protocol === 'ws:' || u.protocol === 'wss:')
          return u.href;
      } catch (e) { /* reported below */ }
      hint('Ignoring ?ws=: it is not a ws:// or wss:// URL.');
    }
    if (!location.host)
      return null;
    return (location.protocol === 'https:' ? 'wss' : 'ws') + '://' + location.host + '/chat';
  }

  function setState(state, text) {
    ui.status.dataset.state = state;
    ui.status.dataset.connects = String(connects);
    ui.status.dataset.closes = String(closes);
    ui.statusText.textContent = text;
  }

  function connect() {
    url = wsUrl();
    if (!url) {
      setState('closed', 'no server');
      hint('Open this page from the chat server, or name one: ?ws=ws://HOST:PORT/chat');
      return;
    }
    mySid = room = pendingRoom = null;
    ui.reconnect.hidden = true;
    setState('connecting', 'connecting…');
    try {
      ws = new WebSocket(url);
    } catch (e) {
      setState('closed', 'cannot connect');
      hint(String(e.message || e));
      ui.reconnect.hidden = false;
      return;
    }
    ws.binaryType = 'arraybuffer';
    const self = ws;
    ws.onopen = () => {
      connects++;
      setState('open', 'connected');
      addLine('conn', `connected to ${url}`);
      hint('');
      if (wantRoom)
        join(wantRoom);
      update();
    };
    ws.onmessage = onMessage;
    ws.onclose = (ev) => {
      if (self !== ws)
        return;
      closes++;
      const why = CLOSE_MEANING[ev.code] || 'closed';
      const what = `code ${ev.code}${ev.reason ? ': ' + ev.reason : ''}`;
      setState('closed', `disconnected (${what})`);
      addLine('conn closed', `connection closed: ${why} (${what})`);
      ws = null;
      mySid = room = pendingRoom = null;
      ui.reconnect.hidden = false;
      update();
    };
    update();
  }

  /* ---- actions ---- */

  function join(target) {
    const bytes = enc.encode(target);
    if (bytes.length < 1 || bytes.length > ROOM_MAX) {
      hint(`A room name is 1 to ${ROOM_MAX} bytes (this one is ${bytes.length}).`);
      ui.room.focus();
      return;
    }
    if (sendPacket(C_JOIN, bytes)) {
      pendingRoom = target;
      hint('');
    }
    update();
  }

  function outgoing() {
    const text = ui.text.value;
    return name ? `${name}: ${text}` : text;
  }

  function update() {
    const open = !!ws && ws.readyState === WebSocket.OPEN;
    /* The counter shows the typed text against what the name leaves. */
    const roomFor = TEXT_MAX - (name ? enc.encode(`${name}: `).length : 0);
    const bytes = enc.encode(ui.text.value).length;
    const textOk = bytes > 0 && bytes <= roomFor;
    ui.joinButton.disabled = !open || pendingRoom !== null;
    ui.text.disabled = !open || room === null;
    ui.text.placeholder = !open ? 'Not connected' : room === null ? 'Join a room to chat'
                                                                 : `Message ${room}`;
    ui.send.disabled = ui.text.disabled || !textOk;
    ui.count.textContent = `${bytes}/${roomFor}`;
    ui.count.title = `${bytes} of at most ${roomFor} bytes`;
    ui.count.classList.toggle('over', bytes > roomFor);
    if (room !== null)
      ui.whoami.textContent = `In ${room} as ${name || 'session'} #${mySid}.`;
    else if (pendingRoom !== null)
      ui.whoami.textContent = `Joining ${pendingRoom}…`;
    else
      ui.whoami.textContent = open ? 'Not in a room.' : 'Not connected.';
  }

  ui.join.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const n = ui.name.value.trim();
    if (/[:\n]/.test(n) || n.length > NAME_MAX) {
      hint(`A name has at most ${NAME_MAX} characters and no colon.`);
      ui.name.focus();
      return;
    }
    name = n;
    join(ui.room.value.trim());
  });

  ui.composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (ui.send.disabled)
      return;
    if (sendPacket(C_CHAT, enc.encode(outgoing()))) {
      ui.text.value = '';
      update();
    }
  });

  ui.text.addEventListener('input', update);
  ui.reconnect.addEventListener('click', connect);

  /* ---- the log ---- */

  function hint(text) {
    ui.hint.textContent = text;
  }

  /* Session ids are handed out in sequence: the golden angle keeps
   * neighbours' colours apart. */
  function hue(sid) {
    return Math.round(Number(BigInt(sid) % 360n) * 137.508) % 360;
  }

  function stamp() {
    const t = document.createElement('time');
    const now = new Date();
    t.dateTime = now.toISOString();
    t.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return t;
  }

  function span(cls, text) {
    const s = document.createElement('span');
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function append(li) {
    const log = ui.log;
    const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(li);
    while (log.children.length > LOG_MAX)
      log.removeChild(log.firstChild);
    if (atEnd)
      log.scrollTop = log.scrollHeight;
  }

  function addChat(sid, text) {
    const li = document.createElement('li');
    const named = NAMED.exec(text);
    li.className = 'msg chat' + (sid === mySid ? ' mine' : '');
    li.dataset.sid = sid;
    li.style.setProperty('--hue', String(hue(sid)));
    const head = document.createElement('span');
    head.className = 'head';
    head.append(span('who', named ? named[1] : `#${sid}`));
    if (named)
      head.append(span('sid', `#${sid}`));
    if (sid === mySid)
      head.append(span('you', 'you'));
    head.append(stamp());
    li.append(head, span('text', named ? named[2] : text));
    append(li);
  }

  function addLine(kind, text, sid) {
    const li = document.createElement('li');
    li.className = 'msg ' + kind + (sid && sid === mySid ? ' mine' : '');
    if (sid)
      li.dataset.sid = sid;
    li.append(span('text', text), stamp());
    append(li);
  }

  setState('idle', 'not connected');
  update();
  connect();
})();
