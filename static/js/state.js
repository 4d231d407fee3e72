// The current room session: which room, as whom, how the connection is, and
// the messages on screen. One object, shared by the modules that need it.

export const state = {
  room: '', // the room as asked for (address, form, room list)
  roomTitle: '', // the room as the server names it (`welcome.room`)
  user: '',
  claim: '', // the open-mode claim this room session presents (identity.js)
  ws: null,
  connState: 'idle', // idle | connecting | connected | reconnecting | offline | stopped
  hasConnected: false, // got a welcome in this room at least once
  lastSeq: 0, // highest seq seen in this room
  attempts: 0, // failed attempts since a connection last stayed up (connection.js STABLE_MS)
  closeReason: '', // why the last connection ended, in words
  serverRestarting: false, // closed with 1001 and not welcomed since
  messages: new Map(), // message_id -> { data, el }
  pending: new Map(), // client_id -> pending message (composer.js), in send order
  online: [],
  onlineCount: 0,
  editing: null, // message_id being edited inline
};
