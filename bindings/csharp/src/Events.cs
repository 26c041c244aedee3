// Events.cs: what Client.TryPoll returns, as immutable C# objects that own copies of
// everything (nothing points into native memory), and the codes they carry. One class
// per QM_EVENT_* kind; test with `is` or `as`, or a type switch where the compiler has
// one.

using System;
using System.Collections.Generic;

namespace Quicmatch
{
    /// <summary>One session as other players see it.</summary>
    public sealed class Presence
    {
        public Presence(string userId, string sessionId, string username)
        {
            UserId = userId;
            SessionId = sessionId;
            Username = username;
        }

        /// <summary>The user: stable for the same device id.</summary>
        public string UserId { get; }
        /// <summary>The session: what SendTo and the party calls take.</summary>
        public string SessionId { get; }
        /// <summary>The display name.</summary>
        public string Username { get; }

        public override string ToString() { return Username + " (" + SessionId + ")"; }
    }

    /// <summary>One user the matchmaker put in a group.</summary>
    public sealed class MatchedUser
    {
        public MatchedUser(Presence presence, string partyId, string propertiesJson, int team)
        {
            Presence = presence;
            PartyId = partyId;
            PropertiesJson = propertiesJson;
            Team = team;
        }

        public Presence Presence { get; }
        /// <summary>The party the user was matched with, or null.</summary>
        public string PartyId { get; }
        /// <summary>The ticket's properties: {"string":{...},"numeric":{...}}.</summary>
        public string PropertiesJson { get; }
        /// <summary>The user's team, from 0, when the tickets asked for teams; -1 otherwise.</summary>
        public int Team { get; }
    }

    /// <summary>One match in a listing.</summary>
    public sealed class MatchListing
    {
        public MatchListing(string matchId, string label, string handler, uint size, uint maxSize,
            uint tickRate, bool authoritative)
        {
            MatchId = matchId;
            Label = label;
            Handler = handler;
            Size = size;
            MaxSize = maxSize;
            TickRate = tickRate;
            Authoritative = authoritative;
        }

        public string MatchId { get; }
        public string Label { get; }
        public string Handler { get; }
        public uint Size { get; }
        public uint MaxSize { get; }
        public uint TickRate { get; }
        public bool Authoritative { get; }
    }

    /// <summary>Something the server sent, or the answer to a request.</summary>
    public abstract class Event
    {
        protected Event(uint request) { Request = request; }

        /// <summary>The request this answers (the id a request method returned), or 0.</summary>
        public uint Request { get; }
    }

    /// <summary>This client is in a match: the answer to create, join and join-by-token.</summary>
    public sealed class MatchJoined : Event
    {
        public MatchJoined(uint request, string matchId, uint size, IReadOnlyList<Presence> presences, Presence self)
            : base(request)
        {
            MatchId = matchId;
            Size = size;
            Presences = presences;
            Self = self;
        }

        public string MatchId { get; }
        public uint Size { get; }
        /// <summary>Every member, this client included, in join order.</summary>
        public IReadOnlyList<Presence> Presences { get; }
        public Presence Self { get; }
    }

    /// <summary>Members joined or left a match.</summary>
    public sealed class MatchPresenceChanged : Event
    {
        public MatchPresenceChanged(string matchId, IReadOnlyList<Presence> joins, IReadOnlyList<Presence> leaves)
            : base(0)
        {
            MatchId = matchId;
            Joins = joins;
            Leaves = leaves;
        }

        public string MatchId { get; }
        public IReadOnlyList<Presence> Joins { get; }
        public IReadOnlyList<Presence> Leaves { get; }
    }

    /// <summary>Match data from another member.</summary>
    public sealed class MatchDataReceived : Event
    {
        public MatchDataReceived(string matchId, Presence sender, long opCode, byte[] data, bool reliable, ulong seq)
            : base(0)
        {
            MatchId = matchId;
            Sender = sender;
            OpCode = opCode;
            Data = data;
            Reliable = reliable;
            Seq = seq;
        }

        public string MatchId { get; }
        public Presence Sender { get; }
        public long OpCode { get; }
        /// <summary>The payload; this event's own copy.</summary>
        public byte[] Data { get; }
        public bool Reliable { get; }
        /// <summary>The match's processing order: a later Seq was processed later.</summary>
        public ulong Seq { get; }
    }

    /// <summary>A matchmaker ticket was created (PartyId is set for a party's).</summary>
    public sealed class MatchmakerTicketCreated : Event
    {
        public MatchmakerTicketCreated(uint request, string ticket, string partyId) : base(request)
        {
            Ticket = ticket;
            PartyId = partyId;
        }

        public string Ticket { get; }
        public string PartyId { get; }
    }

    /// <summary>The matchmaker formed a group: join with Client.JoinToken(Token), or JoinMatch(MatchId).</summary>
    public sealed class MatchmakerMatched : Event
    {
        public MatchmakerMatched(string ticket, string token, string matchId, IReadOnlyList<MatchedUser> users,
            Presence self) : base(0)
        {
            Ticket = ticket;
            Token = token;
            MatchId = matchId;
            Users = users;
            Self = self;
        }

        public string Ticket { get; }
        public string Token { get; }
        public string MatchId { get; }
        public IReadOnlyList<MatchedUser> Users { get; }
        public Presence Self { get; }
    }

    /// <summary>The server cancelled one of this client's tickets.</summary>
    public sealed class MatchmakerTicketCancelled : Event
    {
        public MatchmakerTicketCancelled(string ticket, string reason) : base(0)
        {
            Ticket = ticket;
            Reason = reason;
        }

        public string Ticket { get; }
        public string Reason { get; }
    }

    /// <summary>A server-run match ended; this client is no longer in it.</summary>
    public sealed class MatchEnded : Event
    {
        public MatchEnded(string matchId, string reason) : base(0)
        {
            MatchId = matchId;
            Reason = reason;
        }

        public string MatchId { get; }
        public string Reason { get; }
    }

    /// <summary>The answer to ListMatches.</summary>
    public sealed class MatchList : Event
    {
        public MatchList(uint request, IReadOnlyList<MatchListing> matches) : base(request) { Matches = matches; }

        public IReadOnlyList<MatchListing> Matches { get; }
    }

    /// <summary>The answer to Rpc: the server function's output.</summary>
    public sealed class RpcResult : Event
    {
        public RpcResult(uint request, string payload) : base(request) { Payload = payload; }

        public string Payload { get; }
    }

    /// <summary>A party snapshot: the answer to CreateParty, or pushed when admitted.</summary>
    public sealed class PartyJoined : Event
    {
        public PartyJoined(uint request, string partyId, bool open, uint maxSize, string label, Presence leader,
            IReadOnlyList<Presence> members, Presence self) : base(request)
        {
            PartyId = partyId;
            Open = open;
            MaxSize = maxSize;
            Label = label;
            Leader = leader;
            Members = members;
            Self = self;
        }

        public string PartyId { get; }
        public bool Open { get; }
        public uint MaxSize { get; }
        public string Label { get; }
        public Presence Leader { get; }
        public IReadOnlyList<Presence> Members { get; }
        public Presence Self { get; }
    }

    /// <summary>Members joined or left a party.</summary>
    public sealed class PartyPresenceChanged : Event
    {
        public PartyPresenceChanged(string partyId, IReadOnlyList<Presence> joins, IReadOnlyList<Presence> leaves)
            : base(0)
        {
            PartyId = partyId;
            Joins = joins;
            Leaves = leaves;
        }

        public string PartyId { get; }
        public IReadOnlyList<Presence> Joins { get; }
        public IReadOnlyList<Presence> Leaves { get; }
    }

    /// <summary>A party has a new leader.</summary>
    public sealed class PartyLeaderChanged : Event
    {
        public PartyLeaderChanged(string partyId, Presence leader) : base(0)
        {
            PartyId = partyId;
            Leader = leader;
        }

        public string PartyId { get; }
        public Presence Leader { get; }
    }

    /// <summary>Sessions asked to join this client's party, or the answer to ListPartyJoinRequests.</summary>
    public sealed class PartyJoinRequested : Event
    {
        public PartyJoinRequested(uint request, string partyId, IReadOnlyList<Presence> requesters) : base(request)
        {
            PartyId = partyId;
            Requesters = requesters;
        }

        public string PartyId { get; }
        public IReadOnlyList<Presence> Requesters { get; }
    }

    /// <summary>This client is no longer in (or waiting for) a party.</summary>
    public sealed class PartyClosed : Event
    {
        public PartyClosed(string partyId, string reason) : base(0)
        {
            PartyId = partyId;
            Reason = reason;
        }

        public string PartyId { get; }
        public string Reason { get; }
    }

    /// <summary>Data from another party member.</summary>
    public sealed class PartyDataReceived : Event
    {
        public PartyDataReceived(string partyId, Presence sender, long opCode, byte[] data) : base(0)
        {
            PartyId = partyId;
            Sender = sender;
            OpCode = opCode;
            Data = data;
        }

        public string PartyId { get; }
        public Presence Sender { get; }
        public long OpCode { get; }
        public byte[] Data { get; }
    }

    /// <summary>The party leader put the party into the matchmaker.</summary>
    public sealed class PartyMatchmakerTicket : Event
    {
        public PartyMatchmakerTicket(string partyId, string ticket) : base(0)
        {
            PartyId = partyId;
            Ticket = ticket;
        }

        public string PartyId { get; }
        public string Ticket { get; }
    }

    /// <summary>The party leader changed the open flag or the label.</summary>
    public sealed class PartyUpdated : Event
    {
        public PartyUpdated(string partyId, bool open, string label) : base(0)
        {
            PartyId = partyId;
            Open = open;
            Label = label;
        }

        public string PartyId { get; }
        public bool Open { get; }
        public string Label { get; }
    }

    /// <summary>A request succeeded and has nothing else to say.</summary>
    public sealed class Ack : Event
    {
        public Ack(uint request) : base(request) { }
    }

    /// <summary>A request failed (or, with Request 0, something sent without one).</summary>
    public sealed class ErrorEvent : Event
    {
        public ErrorEvent(uint request, int code, string codeName, string message) : base(request)
        {
            Code = code;
            CodeName = codeName;
            Message = message;
        }

        /// <summary>A server code (ErrorCodes, >= 0) or a local ResultCode (negative).</summary>
        public int Code { get; }
        /// <summary>The code's name, such as "MATCH_NOT_FOUND" or "QM_ERR_TIMEOUT".</summary>
        public string CodeName { get; }
        public string Message { get; }

        public override string ToString() { return CodeName + ": " + Message; }
    }

    /// <summary>The connection was lost; the client is resuming its session.</summary>
    public sealed class Reconnecting : Event
    {
        public Reconnecting(int code, string reason) : base(0)
        {
            Code = code;
            Reason = reason;
        }

        /// <summary>A CloseCodes value, or ResultCode.Disconnected without one.</summary>
        public int Code { get; }
        public string Reason { get; }
    }

    /// <summary>The session resumed: same session, same matches, no event lost.</summary>
    public sealed class Reconnected : Event
    {
        public Reconnected(uint attempts) : base(0) { Attempts = attempts; }

        public uint Attempts { get; }
    }

    /// <summary>The connection ended and could not be resumed. Always the last event.</summary>
    public sealed class Disconnected : Event
    {
        public Disconnected(int code, string reason) : base(0)
        {
            Code = code;
            Reason = reason;
        }

        /// <summary>A CloseCodes value when the server closed it, else ResultCode.Disconnected.</summary>
        public int Code { get; }
        public string Reason { get; }
    }

    /// <summary>An event this version of the binding does not know. Ignore it.</summary>
    public sealed class UnknownEvent : Event
    {
        public UnknownEvent(int kind, string description) : base(0)
        {
            Kind = kind;
            Description = description;
        }

        public int Kind { get; }
        public string Description { get; }
    }

    /// <summary>What the calls that answer at once return (and negative ErrorEvent codes).</summary>
    public enum ResultCode
    {
        Ok = 0,
        Null = -1,
        BadInput = -2,
        NotMember = -3,
        TooLarge = -4,
        Busy = -5,
        Closed = -6,
        Disconnected = -7,
        Timeout = -8,
        Internal = -9,
    }

    /// <summary>The server's error codes (ErrorEvent.Code when not negative). The set is open.</summary>
    public static class ErrorCodes
    {
        public const int RuntimeException = 0;
        public const int UnrecognizedPayload = 1;
        public const int MissingPayload = 2;
        public const int BadInput = 3;
        public const int MatchNotFound = 4;
        public const int MatchJoinRejected = 5;
        public const int RuntimeFunctionNotFound = 6;
        public const int RuntimeFunctionException = 7;
        public const int Unauthenticated = 100;
        public const int NotMatchMember = 101;
        public const int PayloadTooLarge = 102;
        public const int LimitExceeded = 103;
        public const int RateLimited = 104;
        public const int TicketNotFound = 105;
        public const int PartyNotFound = 200;
        public const int PartyFull = 201;
        public const int PartyJoinRequestsFull = 202;
        public const int PartyAlreadyMember = 203;
        public const int PartyJoinRequestDuplicate = 204;
        public const int PartyNotLeader = 205;
        public const int PartyNotMember = 206;
        public const int PartyMemberNotFound = 207;
        public const int PartyJoinRequestNotFound = 208;
        public const int PartyCannotRemoveSelf = 209;
    }

    /// <summary>Connection close codes (Disconnected.Code when not negative).</summary>
    public static class CloseCodes
    {
        public const int Normal = 0;
        public const int AuthFailed = 1;
        public const int AuthTimeout = 2;
        public const int ProtocolError = 3;
        public const int SlowConsumer = 4;
        public const int RateLimited = 5;
        public const int ServerShutdown = 6;
        public const int ServerFull = 7;
        public const int SessionReplaced = 8;
        public const int ResumeGap = 9;
        public const int TimedOut = 10;
        public const int ServerRestarting = 11;
    }

    /// <summary>A connect that failed, with the library's reason.</summary>
    public sealed class QuicmatchException : Exception
    {
        public QuicmatchException(string message) : base(message) { }
    }
}
