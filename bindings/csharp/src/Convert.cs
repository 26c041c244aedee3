// Convert.cs: the one place that reads native memory. It turns the qm_event that
// qm_poll filled (pointers valid only until the next poll) into an Event that owns
// copies of everything, and C# strings into NUL-terminated UTF-8 for the calls.

using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;

namespace Quicmatch
{
    internal static class Utf8
    {
        /// <summary>NUL-terminated UTF-8, or null (a NULL pointer) for null.</summary>
        internal static byte[] Encode(string s)
        {
            if (s == null) return null;
            var bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
            Encoding.UTF8.GetBytes(s, 0, s.Length, bytes, 0);
            return bytes;
        }

        /// <summary>A copy of a NUL-terminated UTF-8 string; null for a NULL pointer.</summary>
        internal static string Decode(IntPtr p)
        {
            if (p == IntPtr.Zero) return null;
            int len = 0;
            while (Marshal.ReadByte(p, len) != 0) len++;
            var bytes = new byte[len];
            Marshal.Copy(p, bytes, 0, len);
            return Encoding.UTF8.GetString(bytes);
        }

        /// <summary>A string that fits in a fixed buffer, up to its first NUL.</summary>
        internal static string FromBuffer(byte[] buffer)
        {
            int len = Array.IndexOf(buffer, (byte)0);
            return Encoding.UTF8.GetString(buffer, 0, len < 0 ? buffer.Length : len);
        }
    }

    internal static class EventConverter
    {
        // qm_event kinds (QM_EVENT_* in quicmatch.h).
        internal const int Match = 1;
        internal const int MatchPresence = 2;
        internal const int MatchData = 3;
        internal const int MatchmakerTicket = 4;
        internal const int MatchmakerMatched = 5;
        internal const int Error = 6;
        internal const int DisconnectedKind = 7;
        internal const int AckKind = 8;
        internal const int MatchmakerTicketCancelledKind = 9;
        internal const int MatchEndedKind = 10;
        internal const int MatchListKind = 11;
        internal const int Rpc = 12;
        internal const int Party = 13;
        internal const int PartyPresence = 14;
        internal const int PartyLeader = 15;
        internal const int PartyJoinRequest = 16;
        internal const int PartyClose = 17;
        internal const int PartyData = 18;
        internal const int PartyMatchmakerTicketKind = 19;
        internal const int PartyUpdate = 20;
        internal const int ReconnectingKind = 21;
        internal const int ReconnectedKind = 22;

        internal static Presence Presence(NativePresence p)
        {
            if (p.SessionId == IntPtr.Zero) return null;
            return new Presence(Utf8.Decode(p.UserId), Utf8.Decode(p.SessionId), Utf8.Decode(p.Username));
        }

        static int Count(UIntPtr len)
        {
            ulong n = len.ToUInt64();
            if (n > int.MaxValue) throw new InvalidOperationException("array length out of range");
            return (int)n;
        }

        static T[] Array<T>(IntPtr first, UIntPtr len) where T : struct
        {
            int n = Count(len);
            var items = new T[n];
            int size = Marshal.SizeOf(typeof(T));
            for (int i = 0; i < n; i++)
                items[i] = (T)Marshal.PtrToStructure(IntPtr.Add(first, i * size), typeof(T));
            return items;
        }

        static IReadOnlyList<Presence> Presences(IntPtr first, UIntPtr len)
        {
            var list = new List<Presence>();
            foreach (var p in Array<NativePresence>(first, len)) list.Add(Presence(p));
            return list.AsReadOnly();
        }

        static byte[] Bytes(IntPtr data, UIntPtr len)
        {
            var bytes = new byte[Count(len)];
            if (bytes.Length > 0) Marshal.Copy(data, bytes, 0, bytes.Length);
            return bytes;
        }

        internal static string CodeName(int code)
        {
            return Utf8.Decode(Native.qm_code_name(code));
        }

        /// <summary>Copies a polled event out of native memory.</summary>
        internal static Event Convert(ref NativeEvent e)
        {
            string matchId = Utf8.Decode(e.MatchId);
            string partyId = Utf8.Decode(e.PartyId);
            string message = Utf8.Decode(e.Message);
            switch (e.Kind)
            {
                case Match:
                    return new MatchJoined(e.Request, matchId, e.Size, Presences(e.Presences, e.PresencesLen),
                        Presence(e.Self));
                case MatchPresence:
                    return new MatchPresenceChanged(matchId, Presences(e.Presences, e.PresencesLen),
                        Presences(e.Leaves, e.LeavesLen));
                case MatchData:
                    return new MatchDataReceived(matchId, Presence(e.Sender), e.OpCode, Bytes(e.Data, e.DataLen),
                        e.Reliable != 0, e.Seq);
                case MatchmakerTicket:
                    return new MatchmakerTicketCreated(e.Request, Utf8.Decode(e.Ticket), partyId);
                case MatchmakerMatched:
                    var users = new List<MatchedUser>();
                    foreach (var u in Array<NativeMatchedUser>(e.Users, e.UsersLen))
                        users.Add(new MatchedUser(Presence(u.Presence), Utf8.Decode(u.PartyId),
                            Utf8.Decode(u.PropertiesJson), u.Team));
                    return new MatchmakerMatched(Utf8.Decode(e.Ticket), Utf8.Decode(e.Token), matchId,
                        users.AsReadOnly(), Presence(e.Self));
                case MatchmakerTicketCancelledKind:
                    return new MatchmakerTicketCancelled(Utf8.Decode(e.Ticket), message);
                case MatchEndedKind:
                    return new MatchEnded(matchId, message);
                case MatchListKind:
                    var listings = new List<MatchListing>();
                    foreach (var m in Array<NativeMatchListing>(e.Matches, e.MatchesLen))
                        listings.Add(new MatchListing(Utf8.Decode(m.MatchId), Utf8.Decode(m.Label),
                            Utf8.Decode(m.Handler), m.Size, m.MaxSize, m.TickRate, m.Authoritative != 0));
                    return new MatchList(e.Request, listings.AsReadOnly());
                case Rpc:
                    return new RpcResult(e.Request, Encoding.UTF8.GetString(Bytes(e.Data, e.DataLen)));
                case Party:
                    return new PartyJoined(e.Request, partyId, e.Open != 0, e.MaxSize, Utf8.Decode(e.Label),
                        Presence(e.Leader), Presences(e.Presences, e.PresencesLen), Presence(e.Self));
                case PartyPresence:
                    return new PartyPresenceChanged(partyId, Presences(e.Presences, e.PresencesLen),
                        Presences(e.Leaves, e.LeavesLen));
                case PartyLeader:
                    return new PartyLeaderChanged(partyId, Presence(e.Leader));
                case PartyJoinRequest:
                    return new PartyJoinRequested(e.Request, partyId, Presences(e.Presences, e.PresencesLen));
                case PartyClose:
                    return new PartyClosed(partyId, message);
                case PartyData:
                    return new PartyDataReceived(partyId, Presence(e.Sender), e.OpCode, Bytes(e.Data, e.DataLen));
                case PartyMatchmakerTicketKind:
                    return new PartyMatchmakerTicket(partyId, Utf8.Decode(e.Ticket));
                case PartyUpdate:
                    return new PartyUpdated(partyId, e.Open != 0, Utf8.Decode(e.Label));
                case AckKind:
                    return new Ack(e.Request);
                case Error:
                    return new ErrorEvent(e.Request, e.Code, CodeName(e.Code), message);
                case ReconnectingKind:
                    return new Reconnecting(e.Code, message);
                case ReconnectedKind:
                    return new Reconnected(e.Attempts);
                case DisconnectedKind:
                    return new Disconnected(e.Code, message);
                default:
                    return new UnknownEvent(e.Kind, message);
            }
        }
    }
}
