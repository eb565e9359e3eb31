-- room_codes: the reply codes of every rooms script, by name.
-- The same names and numbers as RoomReply in scheduler/rooms.py (a test compares them).
-- code >= 0 is a success; code < 0 a refusal that changed nothing. The numbers are the rooms
-- family's own: -1 here is ROOM_NOT_FOUND, not the scheduling family's NOT_REGISTERED.

local CODE = {
  OK = 0,
  ROOM_NOT_FOUND = -1,
  ALREADY_IN_ROOM = -2,
  ROOM_FULL = -3,
  NOT_A_MEMBER = -4,
  CODE_TAKEN = -5,
}
