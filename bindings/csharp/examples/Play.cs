// Play.cs: the script of ffi/examples/play.c, through the C# binding. It connects,
// joins a named match, exchanges unreliable and reliable data with the other player,
// calls a server function, lists a labelled match, runs a party, matchmakes and joins
// the matched game by token, leaves and closes, checking every answer. Exit status 0
// when all went as expected, 1 (with the reason on stderr) otherwise.
//
// ffi/tests/csharp.rs builds it with Mono's compiler and runs it against a real server
// with a Rust SDK player on the other side:
//   mcs -out:play.exe bindings/csharp/src/*.cs bindings/csharp/examples/Play.cs
//   mono play.exe HOST:PORT TRUST MATCH_NAME   (with libquicmatch_ffi.so findable)

using System;
using System.Diagnostics;
using System.Linq;
using System.Text;
using System.Threading;
using Quicmatch;

static class Play
{
    const string Me = "cs-player";
    const string Peer = "rust-peer";
    static readonly TimeSpan StepTime = TimeSpan.FromSeconds(60);

    static Client client;

    sealed class Failure : Exception
    {
        public Failure(string message) : base(message) { }
    }

    static void Check(bool ok, string what)
    {
        if (!ok) throw new Failure(what);
    }

    static void Ok(string step) { Console.WriteLine("ok: " + step); }

    static bool Text(byte[] data, string text) { return Encoding.UTF8.GetString(data) == text; }

    /// Polls frame by frame until an event of type T passes `want`, failing on an error
    /// or a disconnect nobody asked for. With a budget it gives up quietly (null).
    static T Await<T>(Func<T, bool> want, TimeSpan? budget = null) where T : Event
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < (budget ?? StepTime))
        {
            Event ev;
            while (client.TryPoll(out ev))
            {
                var wanted = ev as T;
                if (wanted != null && want(wanted)) return wanted;
                var error = ev as ErrorEvent;
                if (error != null) throw new Failure("unexpected error for request " + error.Request + ": " + error);
                if (ev is Disconnected) throw new Failure("disconnected: " + ((Disconnected)ev).Reason);
                Console.WriteLine("   (passing over " + ev.GetType().Name + ")");
            }
            Check(!client.IsFinished, "the client finished while waiting for " + typeof(T).Name);
            Thread.Sleep(2); // one frame
        }
        if (budget != null) return null;
        throw new Failure("timed out waiting for " + typeof(T).Name);
    }

    static T Answer<T>(uint request) where T : Event
    {
        Check(request != 0, typeof(T).Name + " request was not sent");
        return Await<T>(e => e.Request == request);
    }

    static int Main(string[] args)
    {
        if (args.Length != 3)
        {
            Console.Error.WriteLine("usage: play.exe HOST:PORT TRUST MATCH_NAME");
            return 2;
        }
        try
        {
            Run(args[0], args[1], args[2]);
            Ok("done");
            return 0;
        }
        catch (Failure f)
        {
            Console.Error.WriteLine("FAIL: " + f.Message);
            return 1;
        }
        finally
        {
            if (client != null) client.Dispose();
        }
    }

    static void Run(string server, string trust, string name)
    {
        Console.WriteLine("library " + Client.LibraryVersion);
        try
        {
            Client.Connect(server, "pin:" + new string('0', 64), "device-cs-player-0001", Me);
            throw new Failure("connected with the wrong pin");
        }
        catch (QuicmatchException e)
        {
            Check(e.Message.Contains("certificate"), "wrong-pin message: " + e.Message);
        }
        Ok("a failed connect says why");

        client = Client.Connect(server, trust, "device-cs-player-0001", Me);
        Check(client.Self.Username == Me, "self is " + client.Self.Username);
        Check(client.DatagramsDropped == 0, "dropped " + client.DatagramsDropped + " before any data");
        Ok("connected");

        var joined = Answer<MatchJoined>(client.CreateMatch(name));
        Check(joined.Size == 2 && joined.Presences.Count == 2, "match has " + joined.Size + " members");
        var peer = joined.Presences.FirstOrDefault(p => p.Username == Peer);
        Check(peer != null, "the other player is not in the match");
        Check(joined.Self.Username == Me, "self presence");
        string match = joined.MatchId;
        Ok("created-or-joined the named match");

        var again = Answer<MatchJoined>(client.JoinMatch(match));
        Check(again.MatchId == match && again.Size == 2, "join answered another match");
        Ok("joined it by id");

        MatchDataReceived data = null;
        for (int attempt = 0; attempt < 20 && data == null; attempt++)
        {
            Check(client.Send(match, 1, Encoding.UTF8.GetBytes("ping-u"), false) == ResultCode.Ok, "datagram");
            data = Await<MatchDataReceived>(d => d.OpCode == 11 && d.MatchId == match, TimeSpan.FromSeconds(2));
        }
        Check(data != null, "no answer to the datagrams");
        Check(Text(data.Data, "pong-u") && !data.Reliable && data.Sender.Username == Peer, "unreliable answer");
        Ok("datagram exchanged");

        Check(client.Send(match, 2, Encoding.UTF8.GetBytes("ping-r"), true) == ResultCode.Ok, "reliable send");
        data = Await<MatchDataReceived>(d => d.OpCode == 12);
        Check(Text(data.Data, "pong-r") && data.Reliable, "reliable answer");
        Ok("reliable data exchanged");

        var buffer = Encoding.UTF8.GetBytes("xxonly-youxx");
        Check(client.SendTo(match, 6, buffer, 2, 8, true, peer.SessionId) == ResultCode.Ok, "targeted send");
        data = Await<MatchDataReceived>(d => d.OpCode == 16);
        Check(Text(data.Data, "got-targeted"), "targeted answer");
        Ok("targeted data exchanged");

        Check(client.Send(match, 1, new byte[2000], false) == ResultCode.TooLarge, "oversized datagram");
        Check(client.Send(Guid.Empty.ToString(), 1, new byte[1], true) == ResultCode.NotMember, "not a member");
        Check(client.Send("not-an-id", 1, new byte[1], true) == ResultCode.BadInput, "malformed id");
        Check(client.SendTo(match, 1, new byte[4], 3, 2, true) == ResultCode.BadInput, "slice past the end");
        Ok("bad sends refused");

        var rpc = Answer<RpcResult>(client.Rpc("echo", "{\"hello\":\"wörld\"}"));
        Check(rpc.Payload == "{\"hello\":\"wörld\"}", "rpc returned " + rpc.Payload);
        var missing = Answer<ErrorEvent>(client.Rpc("no-such-function"));
        Check(missing.Code == ErrorCodes.RuntimeFunctionNotFound, "unknown rpc gave " + missing);
        Check(missing.CodeName == "RUNTIME_FUNCTION_NOT_FOUND", "code name " + missing.CodeName);
        Ok("rpc answered");

        var labelled = Answer<MatchJoined>(client.CreateMatch(null, "{\"mode\":\"cs-demo\"}", 4, false));
        Check(labelled.Size == 1, "a new match has " + labelled.Size + " members");
        var list = Answer<MatchList>(client.ListMatches(10, false, null, 0, 0, "+label.mode:cs-demo"));
        Check(list.Matches.Count == 1 && list.Matches[0].MatchId == labelled.MatchId &&
              list.Matches[0].Label == "{\"mode\":\"cs-demo\"}" && list.Matches[0].MaxSize == 4,
              "the listing does not show the labelled match");
        Answer<Ack>(client.LeaveMatch(labelled.MatchId));
        Ok("listed a labelled match");

        var party = Answer<PartyJoined>(client.CreateParty(true, 4, "cs-squad"));
        Check(party.Leader.Username == Me && party.Members.Count == 1 && party.Open && party.Label == "cs-squad",
              "party snapshot");
        Check(client.Send(match, 4, Encoding.UTF8.GetBytes(party.PartyId), true) == ResultCode.Ok, "party id send");
        var arrived = Await<PartyPresenceChanged>(p => p.PartyId == party.PartyId);
        Check(arrived.Joins.Any(p => p.Username == Peer), "the other player did not join the party");
        Answer<Ack>(client.SendPartyData(party.PartyId, 5, Encoding.UTF8.GetBytes("party-hi")));
        var partyData = Await<PartyDataReceived>(d => d.OpCode == 15);
        Check(Text(partyData.Data, "party-pong") && partyData.Sender.Username == Peer, "party answer");
        Answer<Ack>(client.CloseParty(party.PartyId));
        Ok("party played");

        var ticket = Answer<MatchmakerTicketCreated>(client.AddMatchmaker("+properties.mode:play", 2, 2, 0,
            "{\"string\":{\"mode\":\"play\"},\"numeric\":{\"skill\":5}}"));
        var matched = Await<MatchmakerMatched>(m => m.Ticket == ticket.Ticket);
        Check(matched.Token != null && matched.Users.Count == 2, "matchmaker result");
        Check(matched.Users.Any(u => u.Presence.Username == Peer && u.PropertiesJson.Contains("\"mode\":\"play\"")
                                     && u.Team == -1),
              "the other player is not among the matched users");
        Ok("matched");

        var game = Answer<MatchJoined>(client.JoinToken(matched.Token));
        if (!game.Presences.Any(p => p.Username == Peer))
        {
            var came = Await<MatchPresenceChanged>(p => p.MatchId == game.MatchId);
            Check(came.Joins.Any(p => p.Username == Peer), "someone else joined");
        }
        Check(client.Send(game.MatchId, 3, Encoding.UTF8.GetBytes("hello-token"), true) == ResultCode.Ok, "game send");
        data = Await<MatchDataReceived>(d => d.OpCode == 13 && d.MatchId == game.MatchId);
        Check(Text(data.Data, "token-pong"), "answer in the matched game");
        Ok("played the matched game");

        var gone = Answer<ErrorEvent>(client.RemoveMatchmaker(ticket.Ticket));
        Check(gone.Code == ErrorCodes.TicketNotFound, "removing a matched ticket gave " + gone);
        Ok("a matched ticket is gone");

        Answer<Ack>(client.LeaveMatch(game.MatchId));
        Answer<Ack>(client.LeaveMatch(match));
        Check(client.Send(match, 1, new byte[1], true) == ResultCode.NotMember, "sent after leaving");
        Ok("left both matches");

        client.Close();
        Check(client.CreateMatch("after-close") == 0, "a request was sent after Close");
        Check(client.Send(match, 1, new byte[1], true) == ResultCode.Closed, "a send after Close");
        Await<Disconnected>(d => true);
        Event none;
        Check(!client.TryPoll(out none) && none == null && client.IsFinished, "events after the last one");
        Ok("closed");

        client.Dispose();
        bool refused = false;
        try { client.CreateMatch(); }
        catch (ObjectDisposedException) { refused = true; }
        Check(refused, "a disposed client was used");
        client = null;
        Ok("disposed");
    }
}
