/*
 * play.c: a complete quicmatch client in C, written as a game loop would use it.
 *
 * It connects, joins a named match (created by whoever comes first), exchanges
 * unreliable and reliable data with the other player, calls a server function, lists
 * a labelled match, runs a party, matchmakes and joins the matched game by token,
 * leaves everything and closes. Each step waits for the event that answers it and
 * checks what it carries; any surprise ends the program with a message and exit
 * status 1.
 *
 * The test in ffi/tests/c_example.rs runs it (under valgrind) against a real server
 * with a Rust SDK player on the other side, which answers each message:
 *   op 1 "ping-u" (unreliable)  -> op 11 "pong-u" (unreliable)
 *   op 2 "ping-r" (reliable)    -> op 12 "pong-r" (reliable)
 *   op 6 to it alone            -> op 16 "got-targeted"
 *   op 4 PARTY_ID               -> joins that party; party op 5 -> party op 15
 *   op 3 in the matched game    -> op 13 "token-pong"
 * The server has an RPC "echo" that returns its payload.
 *
 * Build (from the repository root, after `cargo build -p quicmatch-ffi`):
 *   cc -std=c99 -Wall -Wextra -Iffi/include ffi/examples/play.c \
 *      -Ltarget/debug -lquicmatch_ffi -Wl,-rpath,$PWD/target/debug -o play
 * Run:
 *   ./play 127.0.0.1:7350 ca:certs/server.crt some-match-name
 */
#define _POSIX_C_SOURCE 199309L

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quicmatch.h"

#define ME "c-player"
#define PEER "rust-peer"
/* How long one step may wait for its event. Generous: the test may run under valgrind. */
#define STEP_SECONDS 60.0
/* The game loop's frame time. */
#define FRAME_NS 2000000L

static qm_client *client;

static void fail(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, args);
  fprintf(stderr, "\n");
  va_end(args);
  qm_free(client);
  exit(1);
}

static void ok(const char *step) { printf("ok: %s\n", step); fflush(stdout); }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void next_frame(void) {
  struct timespec t = {0, FRAME_NS};
  nanosleep(&t, NULL);
}

/* Copies a string the library owns, since it lives only until the next qm_poll. */
static char *keep(const char *s) {
  if (s == NULL) fail("expected a string, got NULL");
  size_t n = strlen(s) + 1;
  char *copy = malloc(n);
  if (copy == NULL) fail("out of memory");
  memcpy(copy, s, n);
  return copy;
}

static int same(const char *a, const char *b) { return a != NULL && b != NULL && strcmp(a, b) == 0; }

static int data_is(const qm_event *e, const char *text) {
  size_t n = strlen(text);
  return e->data_len == n && (n == 0 || memcmp(e->data, text, n) == 0);
}

/* What an awaited event must be. request 0 matches any; op_code < 0 any; NULL strings any. */
typedef struct {
  int32_t kind;
  uint32_t request;
  int64_t op_code;
  const char *match_id;
} want;

static int matches(const qm_event *e, want w) {
  if (e->kind != w.kind) return 0;
  if (w.request != 0 && e->request != w.request) return 0;
  if (w.op_code >= 0 && e->op_code != w.op_code) return 0;
  if (w.match_id != NULL && !same(e->match_id, w.match_id)) return 0;
  return 1;
}

/*
 * Polls, frame by frame, until the wanted event arrives; fills *out with it (its
 * pointers valid until the next poll). Events that are not wanted yet are reported
 * and passed over, except failures: an error nobody asked for, or a disconnect.
 * With `budget` > 0 it gives up quietly after that many seconds and returns 0.
 */
static int await_event(want w, qm_event *out, double budget) {
  double limit = budget > 0 ? budget : STEP_SECONDS;
  double deadline = now() + limit;
  while (now() < deadline) {
    int32_t r;
    while ((r = qm_poll(client, out)) == 1) {
      if (matches(out, w)) return 1;
      if (out->kind == QM_EVENT_ERROR)
        fail("unexpected error for request %u: %s (%s)", out->request, out->message,
             qm_code_name(out->code));
      if (out->kind == QM_EVENT_DISCONNECTED) fail("disconnected: %s", out->message);
      printf("   (passing over event kind %d)\n", out->kind);
    }
    if (r < 0) fail("qm_poll returned %d while waiting for kind %d", r, w.kind);
    next_frame();
  }
  if (budget > 0) return 0;
  fail("timed out waiting for event kind %d (request %u)", w.kind, w.request);
  return 0;
}

static want kind(int32_t k, uint32_t request) {
  want w = {k, request, -1, NULL};
  return w;
}

static const qm_presence *find(const qm_presence *list, size_t n, const char *username) {
  for (size_t i = 0; i < n; i++)
    if (same(list[i].username, username)) return &list[i];
  return NULL;
}

static uint32_t sent(uint32_t request, const char *what) {
  if (request == 0) fail("%s was not sent", what);
  return request;
}

static void send_ok(int32_t r, const char *what) {
  if (r != QM_OK) fail("%s: %s", what, qm_code_name(r));
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s HOST:PORT TRUST MATCH_NAME\n", argv[0]);
    return 2;
  }
  const char *server = argv[1], *trust = argv[2], *name = argv[3];
  char err[256];
  qm_event e;

  /* This header and the library agree on the event layout. */
  if (qm_event_size() != sizeof(qm_event)) fail("qm_event is %zu bytes here, %zu in the library",
                                                sizeof(qm_event), qm_event_size());

  /* A failing connect returns NULL with a reason, and frees everything it made. */
  err[0] = '\0';
  if (qm_connect(NULL, trust, "device-c-player-0001", ME, err, sizeof err) != NULL ||
      strstr(err, "server") == NULL)
    fail("connect without a server: %s", err);
  const char *wrong_pin = "pin:0000000000000000000000000000000000000000000000000000000000000000";
  if (qm_connect(server, wrong_pin, "device-c-player-0001", ME, err, sizeof err) != NULL ||
      strstr(err, "certificate") == NULL)
    fail("connect with the wrong pin: %s", err);
  ok("a failed connect says why");

  client = qm_connect(server, trust, "device-c-player-0001", ME, err, sizeof err);
  if (client == NULL) fail("connect: %s", err);
  qm_presence me;
  send_ok(qm_self(client, &me), "qm_self");
  if (!same(me.username, ME)) fail("self is %s", me.username);
  if (qm_datagrams_dropped(client) != 0) fail("datagrams dropped before any data");
  ok("connected");

  /* The match the other player is already in (join-or-create by name). */
  uint32_t r = sent(qm_match_create(client, name), "create");
  await_event(kind(QM_EVENT_MATCH, r), &e, 0);
  if (e.size != 2 || e.presences_len != 2) fail("match has %u members", e.size);
  const qm_presence *peer_in_match = find(e.presences, e.presences_len, PEER);
  if (peer_in_match == NULL) fail("the other player is not in the match");
  if (!same(e.self_presence.username, ME)) fail("self presence is %s", e.self_presence.username);
  char *match = keep(e.match_id);
  char *peer_session = keep(peer_in_match->session_id);
  ok("created-or-joined the named match");

  r = sent(qm_match_join(client, match), "join");
  await_event(kind(QM_EVENT_MATCH, r), &e, 0);
  if (!same(e.match_id, match) || e.size != 2) fail("join answered another match");
  ok("joined it by id");

  /* Datagrams may be lost: send until the answer comes. */
  int got = 0;
  for (int attempt = 0; attempt < 20 && !got; attempt++) {
    send_ok(qm_send(client, match, 1, (const uint8_t *)"ping-u", 6, false), "unreliable send");
    want w = {QM_EVENT_MATCH_DATA, 0, 11, match};
    got = await_event(w, &e, 2.0);
  }
  if (!got) fail("no answer to the datagrams");
  if (!data_is(&e, "pong-u") || e.reliable || !same(e.sender.username, PEER))
    fail("wrong unreliable answer");
  ok("datagram exchanged");

  send_ok(qm_send(client, match, 2, (const uint8_t *)"ping-r", 6, true), "reliable send");
  want pong_r = {QM_EVENT_MATCH_DATA, 0, 12, match};
  await_event(pong_r, &e, 0);
  if (!data_is(&e, "pong-r") || !e.reliable) fail("wrong reliable answer");
  ok("reliable data exchanged");

  const char *only_peer[1] = {peer_session};
  send_ok(qm_send_to(client, match, 6, (const uint8_t *)"only-you", 8, true, only_peer, 1),
          "targeted send");
  want targeted = {QM_EVENT_MATCH_DATA, 0, 16, match};
  await_event(targeted, &e, 0);
  if (!data_is(&e, "got-targeted")) fail("wrong targeted answer");
  ok("targeted data exchanged");

  /* Sends the library can refuse by itself. */
  uint8_t big[2000] = {0};
  if (qm_send(client, match, 1, big, sizeof big, false) != QM_ERR_TOO_LARGE)
    fail("an oversized datagram was not refused");
  if (qm_send(client, "00000000-0000-4000-8000-000000000000", 1, big, 1, true) != QM_ERR_NOT_MEMBER)
    fail("a send to a match this client is not in was not refused");
  if (qm_send(client, "not-an-id", 1, big, 1, true) != QM_ERR_BAD_INPUT)
    fail("a malformed match id was not refused");
  ok("bad sends refused");

  /* Server functions. */
  r = sent(qm_rpc(client, "echo", "{\"hello\":1}"), "rpc");
  await_event(kind(QM_EVENT_RPC, r), &e, 0);
  if (!data_is(&e, "{\"hello\":1}") || strcmp((const char *)e.data, "{\"hello\":1}") != 0)
    fail("rpc returned something else");
  r = sent(qm_rpc(client, "no-such-function", NULL), "rpc");
  want rpc_error = kind(QM_EVENT_ERROR, r);
  await_event(rpc_error, &e, 0);
  if (e.code != QM_CODE_RUNTIME_FUNCTION_NOT_FOUND) fail("unknown rpc gave %s", qm_code_name(e.code));
  ok("rpc answered");

  /* A labelled match, found again by listing. */
  r = sent(qm_match_create_with(client, NULL, "{\"mode\":\"c-demo\"}", 4, false), "create_with");
  await_event(kind(QM_EVENT_MATCH, r), &e, 0);
  if (e.size != 1) fail("a new match has %u members", e.size);
  char *labelled = keep(e.match_id);
  r = sent(qm_match_list(client, 10, 0, NULL, 0, 0, "+label.mode:c-demo"), "list");
  await_event(kind(QM_EVENT_MATCH_LIST, r), &e, 0);
  if (e.matches_len != 1 || !same(e.matches[0].match_id, labelled) ||
      !same(e.matches[0].label, "{\"mode\":\"c-demo\"}") || e.matches[0].max_size != 4 ||
      e.matches[0].authoritative)
    fail("the listing does not show the labelled match");
  r = sent(qm_match_leave(client, labelled), "leave");
  await_event(kind(QM_EVENT_ACK, r), &e, 0);
  ok("listed a labelled match");

  /* A party: the other player joins when told its id. */
  r = sent(qm_party_create(client, true, 4, "c-squad"), "party create");
  await_event(kind(QM_EVENT_PARTY, r), &e, 0);
  if (!same(e.leader.username, ME) || e.presences_len != 1 || !e.open || e.max_size != 4 ||
      !same(e.label, "c-squad"))
    fail("wrong party snapshot");
  char *party = keep(e.party_id);
  send_ok(qm_send(client, match, 4, (const uint8_t *)party, strlen(party), true), "party id send");
  await_event(kind(QM_EVENT_PARTY_PRESENCE, 0), &e, 0);
  if (!same(e.party_id, party) || find(e.presences, e.presences_len, PEER) == NULL)
    fail("the other player did not join the party");
  r = sent(qm_party_send(client, party, 5, (const uint8_t *)"party-hi", 8), "party send");
  await_event(kind(QM_EVENT_ACK, r), &e, 0);
  await_event(kind(QM_EVENT_PARTY_DATA, 0), &e, 0);
  if (e.op_code != 15 || !data_is(&e, "party-pong") || !same(e.sender.username, PEER))
    fail("wrong party answer");
  r = sent(qm_party_close(client, party), "party close");
  await_event(kind(QM_EVENT_ACK, r), &e, 0);
  ok("party played");

  /* Matchmaking: the other player's ticket is already waiting. */
  r = sent(qm_matchmaker_add(client, "+properties.mode:play", 2, 2, 0,
                             "{\"string\":{\"mode\":\"play\"},\"numeric\":{\"skill\":5}}"),
           "matchmaker add");
  await_event(kind(QM_EVENT_MATCHMAKER_TICKET, r), &e, 0);
  char *ticket = keep(e.ticket);
  await_event(kind(QM_EVENT_MATCHMAKER_MATCHED, 0), &e, 0);
  if (!same(e.ticket, ticket) || e.token == NULL || e.users_len != 2)
    fail("wrong matchmaker result");
  int saw_peer = 0;
  for (size_t i = 0; i < e.users_len; i++)
    if (same(e.users[i].presence.username, PEER) &&
        strstr(e.users[i].properties_json, "\"mode\":\"play\"") != NULL && e.users[i].team == -1)
      saw_peer = 1;
  if (!saw_peer) fail("the other player is not among the matched users");
  char *token = keep(e.token);
  ok("matched");

  r = sent(qm_join_token(client, token), "join token");
  await_event(kind(QM_EVENT_MATCH, r), &e, 0);
  char *game = keep(e.match_id);
  if (find(e.presences, e.presences_len, PEER) == NULL) {
    want peer_joins = {QM_EVENT_MATCH_PRESENCE, 0, -1, game};
    await_event(peer_joins, &e, 0);
    if (find(e.presences, e.presences_len, PEER) == NULL) fail("someone else joined");
  }
  send_ok(qm_send(client, game, 3, (const uint8_t *)"hello-token", 11, true), "game send");
  want token_pong = {QM_EVENT_MATCH_DATA, 0, 13, game};
  await_event(token_pong, &e, 0);
  if (!data_is(&e, "token-pong")) fail("wrong answer in the matched game");
  ok("played the matched game");

  r = sent(qm_matchmaker_remove(client, ticket), "matchmaker remove");
  await_event(kind(QM_EVENT_ERROR, r), &e, 0);
  if (e.code != QM_CODE_TICKET_NOT_FOUND) fail("removing a matched ticket gave %s", qm_code_name(e.code));
  ok("a matched ticket is gone");

  r = sent(qm_match_leave(client, game), "leave game");
  await_event(kind(QM_EVENT_ACK, r), &e, 0);
  r = sent(qm_match_leave(client, match), "leave match");
  await_event(kind(QM_EVENT_ACK, r), &e, 0);
  if (qm_send(client, match, 1, big, 1, true) != QM_ERR_NOT_MEMBER) fail("sent after leaving");
  ok("left both matches");

  /* A polite close: the remaining events drain, ending with DISCONNECTED. */
  qm_close(client);
  if (qm_match_create(client, "after-close") != 0) fail("a request was sent after qm_close");
  if (qm_send(client, match, 1, big, 1, true) != QM_ERR_CLOSED) fail("a send after qm_close");
  await_event(kind(QM_EVENT_DISCONNECTED, 0), &e, 0);
  if (qm_poll(client, &e) != QM_ERR_DISCONNECTED || e.kind != QM_EVENT_NONE)
    fail("events after the last one");
  ok("closed");

  free(match);
  free(peer_session);
  free(labelled);
  free(party);
  free(ticket);
  free(token);
  free(game);
  qm_free(client);
  ok("done");
  return 0;
}
