// A Colyseus room that relays each message to every client, as the
// Colyseus documentation's chat example does (this.broadcast in onMessage):
// one encoded message, one ws.send per client. It carries pier's chat
// packets so pier-bench drives it like pier's chat plugin: pier-bench
// --colyseus sends packet id N with body B as a ROOM_DATA_BYTES message of
// type N, and reads messages back the same way. C_JOIN (1) gets the join
// notice S_SYSTEM (102) "<sid> joined <room>"; C_CHAT (2) is broadcast as
// S_CHAT (101): the sender's id (u64 LE) and the text. No state (no schema
// patches to send).
//
// usage: node colyseus-room.js PORT   (prints "colyseus listening on 127.0.0.1:PORT" on stderr)
'use strict';
const { Server, Room } = require('@colyseus/core');
const { WebSocketTransport } = require('@colyseus/ws-transport');

const C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102;
const host = '127.0.0.1';
const port = Number(process.argv[2] || 0);
let nextSid = 1;

class ChatRoom extends Room {
  onCreate() {
    this.maxClients = 100000;
    this.setSeatReservationTime(300); // pier-bench reserves every seat before connecting
    this.onMessage(C_JOIN, (client, body) => {
      client.sendBytes(S_SYSTEM, Buffer.from(`${client.userData.sid} joined ${Buffer.from(body)}`));
    });
    this.onMessage(C_CHAT, (client, body) => {
      const out = Buffer.allocUnsafe(8 + body.length);
      out.writeUInt32LE(client.userData.sid, 0);
      out.writeUInt32LE(0, 4);
      out.set(body, 8);
      this.broadcast(S_CHAT, out);
    });
  }

  onJoin(client) {
    client.userData = { sid: nextSid++ };
  }
}

const gameServer = new Server({ transport: new WebSocketTransport(), greet: false });
gameServer.define('chat', ChatRoom);
gameServer.listen(port, host).then(() => {
  console.error(`colyseus listening on ${host}:${gameServer.transport.server.address().port}`);
});
