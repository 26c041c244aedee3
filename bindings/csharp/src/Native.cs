// Native.cs: the P/Invoke declarations of the quicmatch C API (ffi/include/quicmatch.h)
// and the structs it fills, laid out exactly as the header declares them. Internal:
// games use Client and the event classes, never these.
//
// Strings go to C as NUL-terminated UTF-8 byte arrays (see Utf8.Encode), which every
// runtime marshals the same way, rather than as `string`, which some marshal in the
// system's ANSI code page.

using System;
using System.Runtime.InteropServices;

namespace Quicmatch
{
    internal static class Native
    {
        // A static library linked into the game on iOS; a shared library elsewhere
        // (quicmatch_ffi.dll, libquicmatch_ffi.so, libquicmatch_ffi.dylib).
#if UNITY_IOS && !UNITY_EDITOR
        internal const string Library = "__Internal";
#else
        internal const string Library = "quicmatch_ffi";
#endif

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ClientHandle qm_connect_key(byte[] server, byte[] trust, byte[] serverKey,
            byte[] deviceId, byte[] username, byte[] err, UIntPtr errLen);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int qm_poll(ClientHandle c, out NativeEvent e);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int qm_send_to(ClientHandle c, byte[] matchId, long opCode, IntPtr data,
            UIntPtr len, [MarshalAs(UnmanagedType.U1)] bool reliable, IntPtr[] sessionIds, UIntPtr sessionIdsLen);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void qm_close(ClientHandle c);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void qm_free(IntPtr c);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int qm_self(ClientHandle c, out NativePresence me);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern ulong qm_datagrams_dropped(ClientHandle c);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr qm_code_name(int code);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern UIntPtr qm_event_size();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr qm_version();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_match_create(ClientHandle c, byte[] name);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_match_create_with(ClientHandle c, byte[] name, byte[] label, uint maxSize,
            [MarshalAs(UnmanagedType.U1)] bool unlisted);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_match_join(ClientHandle c, byte[] matchId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_match_leave(ClientHandle c, byte[] matchId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_join_token(ClientHandle c, byte[] token);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_match_list(ClientHandle c, uint limit, int authoritative, byte[] label,
            uint minSize, uint maxSize, byte[] query);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_matchmaker_add_with(ClientHandle c, byte[] query, uint min, uint max,
            uint multiple, byte[] propsJson, byte[] optionsJson);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_matchmaker_remove(ClientHandle c, byte[] ticket);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_rpc(ClientHandle c, byte[] rpcId, byte[] payload);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_create(ClientHandle c, [MarshalAs(UnmanagedType.U1)] bool open,
            uint maxSize, byte[] label);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_join(ClientHandle c, byte[] partyId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_leave(ClientHandle c, byte[] partyId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_close(ClientHandle c, byte[] partyId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_accept(ClientHandle c, byte[] partyId, byte[] sessionId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_remove(ClientHandle c, byte[] partyId, byte[] sessionId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_promote(ClientHandle c, byte[] partyId, byte[] sessionId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_join_requests(ClientHandle c, byte[] partyId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_update(ClientHandle c, byte[] partyId,
            [MarshalAs(UnmanagedType.U1)] bool open);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_label(ClientHandle c, byte[] partyId, byte[] label);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_send(ClientHandle c, byte[] partyId, long opCode, byte[] data,
            UIntPtr len);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_matchmaker_add_with(ClientHandle c, byte[] partyId, byte[] query,
            uint min, uint max, uint multiple, byte[] propsJson, byte[] optionsJson);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint qm_party_matchmaker_remove(ClientHandle c, byte[] partyId, byte[] ticket);
    }

    // The structs are filled by C and only read here; the compiler cannot see that.
#pragma warning disable 0649

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativePresence
    {
        internal IntPtr UserId;
        internal IntPtr SessionId;
        internal IntPtr Username;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeMatchedUser
    {
        internal NativePresence Presence;
        internal IntPtr PartyId;
        internal IntPtr PropertiesJson;
        internal int Team;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeMatchListing
    {
        internal IntPtr MatchId;
        internal IntPtr Label;
        internal IntPtr Handler;
        internal uint Size;
        internal uint MaxSize;
        internal uint TickRate;
        internal byte Authoritative;
    }

    // `bool` fields are C's one-byte bool: declared as byte so the struct stays blittable.
    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeEvent
    {
        internal int Kind;
        internal uint Request;
        internal int Code;
        internal IntPtr MatchId;
        internal IntPtr PartyId;
        internal IntPtr Ticket;
        internal IntPtr Token;
        internal IntPtr Message;
        internal IntPtr Label;
        internal NativePresence Sender;
        internal NativePresence Leader;
        internal NativePresence Self;
        internal long OpCode;
        internal IntPtr Data;
        internal UIntPtr DataLen;
        internal ulong Seq;
        internal uint Size;
        internal uint MaxSize;
        internal uint Attempts;
        internal byte Reliable;
        internal byte Open;
        internal IntPtr Presences;
        internal UIntPtr PresencesLen;
        internal IntPtr Leaves;
        internal UIntPtr LeavesLen;
        internal IntPtr Users;
        internal UIntPtr UsersLen;
        internal IntPtr Matches;
        internal UIntPtr MatchesLen;
    }

#pragma warning restore 0649

    /// <summary>Owns a native client: freed exactly once, by Dispose or the finalizer.</summary>
    internal sealed class ClientHandle : SafeHandle
    {
        internal ClientHandle() : base(IntPtr.Zero, true) { }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            Native.qm_free(handle);
            return true;
        }
    }
}
