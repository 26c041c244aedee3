// Client.cs: a quicmatch client for C#, over the C API. Poll it once a frame from the
// thread that owns it (Unity's main thread, Godot's _Process): TryPoll hands back each
// event as an object; requests return an id at once and are answered by an event with
// that id in Event.Request.

using System;
using System.Runtime.InteropServices;

namespace Quicmatch
{
    /// <summary>
    /// One connection to a quicmatch server. Use it from one thread at a time; Dispose it
    /// (or Close it and poll until Disconnected, then Dispose) when done.
    /// </summary>
    public sealed class Client : IDisposable
    {
        readonly ClientHandle handle;

        Client(ClientHandle handle, Presence self)
        {
            this.handle = handle;
            Self = self;
        }

        /// <summary>This client, as other players see it.</summary>
        public Presence Self { get; }

        /// <summary>True once the last event (Disconnected) has been returned.</summary>
        public bool IsFinished { get; private set; }

        /// <summary>Unreliable match data the native client dropped rather than hand to TryPoll late
        /// (it waited more than 100 ms), so after a hitch the game gets current state, not a backlog.</summary>
        public ulong DatagramsDropped { get { return Native.qm_datagrams_dropped(handle); } }

        /// <summary>The native library's version.</summary>
        public static string LibraryVersion
        {
            get { return Utf8.Decode(Native.qm_version()); }
        }

        /// <summary>
        /// Connects and authenticates, blocking until done (use a loading screen, or a task).
        /// </summary>
        /// <param name="server">"host:port", such as "127.0.0.1:7350".</param>
        /// <param name="trust">"ca:PATH" (a PEM file), "pin:HEX" (the fingerprint the server
        /// prints) or "platform" (the system's roots).</param>
        /// <param name="deviceId">Identifies the user, 10 to 128 bytes.</param>
        /// <param name="username">The display name, or null for the server's choice.</param>
        /// <param name="serverKey">The server key, or null for the default.</param>
        /// <exception cref="QuicmatchException">With the reason the connect failed.</exception>
        public static Client Connect(string server, string trust, string deviceId, string username = null,
            string serverKey = null)
        {
            CheckLayout();
            var err = new byte[512];
            var handle = Native.qm_connect_key(Utf8.Encode(server), Utf8.Encode(trust), Utf8.Encode(serverKey),
                Utf8.Encode(deviceId), Utf8.Encode(username), err, (UIntPtr)err.Length);
            if (handle.IsInvalid)
            {
                handle.Dispose();
                throw new QuicmatchException(Utf8.FromBuffer(err));
            }
            NativePresence me;
            Native.qm_self(handle, out me);
            return new Client(handle, EventConverter.Presence(me));
        }

        /// <summary>Refuses to run with a native library whose event layout differs from this binding's.</summary>
        static void CheckLayout()
        {
            ulong native = Native.qm_event_size().ToUInt64();
            int managed = Marshal.SizeOf(typeof(NativeEvent));
            if (native != (ulong)managed)
                throw new QuicmatchException("the native library's qm_event is " + native +
                    " bytes but this binding's is " + managed + ": use matching versions");
        }

        /// <summary>
        /// The next event, if one is waiting. Call it every frame until it returns false: events
        /// queue up, and a client that stops reading is eventually cut off by the server.
        /// </summary>
        public bool TryPoll(out Event ev)
        {
            ev = null;
            NativeEvent native;
            int r = Native.qm_poll(handle, out native);
            if (r != 1)
            {
                if (r < 0) IsFinished = true;
                return false;
            }
            ev = EventConverter.Convert(ref native);
            return true;
        }

        // Requests: each returns a request id, answered later by an event with that Request;
        // 0 means nothing was sent (closed, disconnected, or too many requests waiting).

        /// <summary>Creates a match and joins it; with a name, join-or-create. Answer: MatchJoined.</summary>
        public uint CreateMatch(string name = null) { return Native.qm_match_create(handle, Utf8.Encode(name)); }

        /// <summary>Creates a labelled, size-limited or unlisted match. Answer: MatchJoined.</summary>
        public uint CreateMatch(string name, string label, uint maxSize, bool unlisted)
        {
            return Native.qm_match_create_with(handle, Utf8.Encode(name), Utf8.Encode(label), maxSize, unlisted);
        }

        /// <summary>Joins a live match by id. Answer: MatchJoined.</summary>
        public uint JoinMatch(string matchId) { return Native.qm_match_join(handle, Utf8.Encode(matchId)); }

        /// <summary>Leaves a match. Answer: Ack.</summary>
        public uint LeaveMatch(string matchId) { return Native.qm_match_leave(handle, Utf8.Encode(matchId)); }

        /// <summary>Joins the match a MatchmakerMatched token names. Answer: MatchJoined.</summary>
        public uint JoinToken(string token) { return Native.qm_join_token(handle, Utf8.Encode(token)); }

        /// <summary>Lists joinable matches (limit 0: 10; bounds 0: none). Answer: MatchList.</summary>
        public uint ListMatches(uint limit = 0, bool? authoritative = null, string label = null, uint minSize = 0,
            uint maxSize = 0, string query = null)
        {
            int which = authoritative.HasValue ? (authoritative.Value ? 1 : 0) : -1;
            return Native.qm_match_list(handle, limit, which, Utf8.Encode(label), minSize, maxSize,
                Utf8.Encode(query));
        }

        /// <summary>
        /// Starts a matchmaker ticket; propertiesJson is {"string":{..},"numeric":{..}} or null;
        /// optionsJson (null: none) as qm_matchmaker_add_with takes it, such as
        /// {"teams":2,"balance":"skill"}. Answer: MatchmakerTicketCreated, then MatchmakerMatched.
        /// </summary>
        public uint AddMatchmaker(string query, uint min, uint max, uint multiple = 0, string propertiesJson = null,
            string optionsJson = null)
        {
            return Native.qm_matchmaker_add_with(handle, Utf8.Encode(query), min, max, multiple,
                Utf8.Encode(propertiesJson), Utf8.Encode(optionsJson));
        }

        /// <summary>Cancels a ticket. Answer: Ack, or ErrorEvent (TicketNotFound).</summary>
        public uint RemoveMatchmaker(string ticket)
        {
            return Native.qm_matchmaker_remove(handle, Utf8.Encode(ticket));
        }

        /// <summary>Calls a server function. Answer: RpcResult.</summary>
        public uint Rpc(string id, string payload = null)
        {
            return Native.qm_rpc(handle, Utf8.Encode(id), Utf8.Encode(payload));
        }

        /// <summary>Creates a party led by this client. Answer: PartyJoined.</summary>
        public uint CreateParty(bool open, uint maxSize, string label = null)
        {
            return Native.qm_party_create(handle, open, maxSize, Utf8.Encode(label));
        }

        /// <summary>Joins (or asks to join) a party. Answer: Ack; PartyJoined once admitted.</summary>
        public uint JoinParty(string partyId) { return Native.qm_party_join(handle, Utf8.Encode(partyId)); }

        /// <summary>Leaves a party. Answer: Ack.</summary>
        public uint LeaveParty(string partyId) { return Native.qm_party_leave(handle, Utf8.Encode(partyId)); }

        /// <summary>Leader only: ends the party. Answer: Ack.</summary>
        public uint CloseParty(string partyId) { return Native.qm_party_close(handle, Utf8.Encode(partyId)); }

        /// <summary>Leader only: admits a requester. Answer: Ack.</summary>
        public uint AcceptPartyMember(string partyId, string sessionId)
        {
            return Native.qm_party_accept(handle, Utf8.Encode(partyId), Utf8.Encode(sessionId));
        }

        /// <summary>Leader only: removes a member or declines a request. Answer: Ack.</summary>
        public uint RemovePartyMember(string partyId, string sessionId)
        {
            return Native.qm_party_remove(handle, Utf8.Encode(partyId), Utf8.Encode(sessionId));
        }

        /// <summary>Leader only: hands the lead to another member. Answer: Ack.</summary>
        public uint PromotePartyMember(string partyId, string sessionId)
        {
            return Native.qm_party_promote(handle, Utf8.Encode(partyId), Utf8.Encode(sessionId));
        }

        /// <summary>Leader only: the pending join requests. Answer: PartyJoinRequested.</summary>
        public uint ListPartyJoinRequests(string partyId)
        {
            return Native.qm_party_join_requests(handle, Utf8.Encode(partyId));
        }

        /// <summary>Leader only: opens or closes the party. Answer: Ack.</summary>
        public uint UpdateParty(string partyId, bool open)
        {
            return Native.qm_party_update(handle, Utf8.Encode(partyId), open);
        }

        /// <summary>Leader only: sets (or, with null, removes) the label. Answer: Ack.</summary>
        public uint SetPartyLabel(string partyId, string label)
        {
            return Native.qm_party_label(handle, Utf8.Encode(partyId), Utf8.Encode(label));
        }

        /// <summary>Sends data reliably to the other party members. Answer: Ack.</summary>
        public uint SendPartyData(string partyId, long opCode, byte[] data)
        {
            data = data ?? new byte[0];
            return Native.qm_party_send(handle, Utf8.Encode(partyId), opCode, data, (UIntPtr)data.Length);
        }

        /// <summary>Leader only: matchmakes the whole party. Answer: MatchmakerTicketCreated.</summary>
        public uint AddPartyMatchmaker(string partyId, string query, uint min, uint max, uint multiple = 0,
            string propertiesJson = null, string optionsJson = null)
        {
            return Native.qm_party_matchmaker_add_with(handle, Utf8.Encode(partyId), Utf8.Encode(query), min, max,
                multiple, Utf8.Encode(propertiesJson), Utf8.Encode(optionsJson));
        }

        /// <summary>Leader only: cancels a party ticket. Answer: Ack.</summary>
        public uint RemovePartyMatchmaker(string partyId, string ticket)
        {
            return Native.qm_party_matchmaker_remove(handle, Utf8.Encode(partyId), Utf8.Encode(ticket));
        }

        /// <summary>
        /// Sends match data to every other member, at once: unreliable (one datagram, at most
        /// 1024 bytes, may be lost) or reliable (ordered, at most 32 KiB).
        /// </summary>
        public ResultCode Send(string matchId, long opCode, byte[] data, bool reliable)
        {
            data = data ?? new byte[0];
            return SendTo(matchId, opCode, data, 0, data.Length, reliable);
        }

        /// <summary>Like Send, with part of a buffer, to these sessions only (none: everyone else).</summary>
        public ResultCode SendTo(string matchId, long opCode, byte[] data, int offset, int count, bool reliable,
            params string[] sessionIds)
        {
            if (data == null) data = new byte[0];
            if (offset < 0 || count < 0 || offset > data.Length - count) return ResultCode.BadInput;
            var pinned = GCHandle.Alloc(data, GCHandleType.Pinned);
            var targets = new IntPtr[sessionIds == null ? 0 : sessionIds.Length];
            try
            {
                for (int i = 0; i < targets.Length; i++) targets[i] = CopyToNative(sessionIds[i]);
                IntPtr start = IntPtr.Add(pinned.AddrOfPinnedObject(), offset);
                return (ResultCode)Native.qm_send_to(handle, Utf8.Encode(matchId), opCode, start,
                    (UIntPtr)count, reliable, targets, (UIntPtr)targets.Length);
            }
            finally
            {
                foreach (var p in targets)
                    if (p != IntPtr.Zero) Marshal.FreeHGlobal(p);
                pinned.Free();
            }
        }

        static IntPtr CopyToNative(string s)
        {
            byte[] bytes = Utf8.Encode(s);
            if (bytes == null) return IntPtr.Zero;
            IntPtr p = Marshal.AllocHGlobal(bytes.Length);
            Marshal.Copy(bytes, 0, p, bytes.Length);
            return p;
        }

        /// <summary>
        /// Starts a polite close without waiting: keep polling until Disconnected, then Dispose.
        /// </summary>
        public void Close() { Native.qm_close(handle); }

        /// <summary>Closes (if not yet) and frees the native client; may wait up to about a second.</summary>
        public void Dispose() { handle.Dispose(); }
    }
}
