// The minimal WebSocket relay a web game would start from, on the `ws`
// package: every message a member of a room sends goes to every member of
// that room, one ws.send per recipient. It speaks pier's chat packets
// (plugins/chat/README.md: C_JOIN, C_CHAT in; S_CHAT, S_SYSTEM out, one
// binary message each) so pier-bench drives it exactly as it drives pier's
// chat plugin; the S_CHAT packet is built once per message, like the
// plugin's, and shared by the sends. Requests for /echo get an echo server
// instead (for pier-bench idle). No validation beyond what the framing
// needs: the least a relay can do.
//
// usage: node ws-relay.js PORT [CERT KEY]
//   prints "ws-relay listening on 127.0.0.1:PORT" on stderr; with CERT and
//   KEY (PEM files) it serves wss:// (an https server under ws).
'use strict';
const fs = require('fs');
const https = require('https');
const { WebSocketServer } = require('ws');

const C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102;
const host = '127.0.0.1';
const port = Number(process.argv[2] || 0);
const rooms = new Map(); // name -> Set of sockets
let nextSid = 1;

function packet(id, body) {
  const p = Buffer.allocUnsafe(4 + body.length);
  p.writeUInt16LE(4 + body.length, 0);
  p.writeUInt16LE(id, 2);
  body.copy(p, 4);
  return p;
}

const opts = { perMessageDeflate: false, maxPayload: 1 << 20, clientTracking: false };
let server = null;
if (process.argv[3]) {
  server = https.createServer({ cert: fs.readFileSync(process.argv[3]),
                                key: fs.readFileSync(process.argv[4]) });
  opts.server = server;
} else {
  Object.assign(opts, { host, port });
}
const wss = new WebSocketServer(opts);

wss.on('connection', (ws, req) => {
  ws.on('error', () => ws.terminate()); // e.g. a message over maxPayload: close 1009, no crash
  if (req.url === '/echo') {
    ws.on('message', (data) => ws.send(data));
    return;
  }
  const sid = nextSid++;
  let room = null, name = null;
  ws.on('message', (data) => {
    if (data.length < 4 || data.readUInt16LE(0) !== data.length) {
      ws.terminate();
      return;
    }
    const id = data.readUInt16LE(2);
    if (id === C_CHAT && room) {
      const out = Buffer.allocUnsafe(data.length + 8);
      out.writeUInt16LE(data.length + 8, 0);
      out.writeUInt16LE(S_CHAT, 2);
      out.writeUInt32LE(sid, 4); // u64 LE: sids stay below 2^32
      out.writeUInt32LE(0, 8);
      data.copy(out, 12, 4);
      for (const m of room)
        m.send(out);
    } else if (id === C_JOIN && !room) {
      name = data.toString('utf8', 4);
      room = rooms.get(name);
      if (!room)
        rooms.set(name, (room = new Set()));
      room.add(ws);
      ws.send(packet(S_SYSTEM, Buffer.from(`${sid} joined ${name}`)));
    }
  });
  ws.on('close', () => {
    if (room) {
      room.delete(ws);
      if (room.size === 0)
        rooms.delete(name);
    }
  });
});

if (server)
  server.listen(port, host, () =>
    console.error(`ws-relay listening on ${host}:${server.address().port} (tls)`));
else
  wss.on('listening', () => console.error(`ws-relay listening on ${host}:${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));
