/*
 * Idem's claim protocol for one key, for the spin model checker (docs/model/README.md maps each step to the code).
 *
 * W workers (requests for the same key, on any node) race through claim -> [renew]* -> execute -> complete | release.
 * The store's steps are atomic (one Lua script, one SQL statement, one map operation under the key's stripe).
 * Every claim hands out a fresh fencing token (a random Guid in the code, a counter here); complete, renew and release
 * act only while the record is in flight and owned by the caller's token.
 *
 * The environment may at any time let a live lease run out (a GC pause, a stalled node, a lost renewal: the owner
 * does not know), crash an owner that holds the key (it never speaks again), or fail a handler (it releases).
 * Each is bounded so the state space is finite; a crashed owner's lease can always run out.
 *
 * Properties:
 *   - safety (assertions): at most one completed execution per key; a stale owner never completes (the completing
 *     token is the newest token the store handed out).
 *   - ltl crashed_key_freed: once an owner crashed while holding the key, the key eventually stops being that
 *     owner's live claim (its lease runs out and another request takes it over).
 *   - ltl final_answer: the key eventually reaches a completed record (every retrying client gets a final answer).
 *
 * Mutants (spin -D...): NO_FENCE  complete/renew/release check only that the record is in flight, not whose it is;
 *                       NO_TAKEOVER an expired in-flight record is never taken over (the marker lives for retention);
 *                       RELEASE_ANY a failed handler's release deletes whatever record stands (a stored response too).
 */

#ifndef W
#define W 3
#endif
#define MAXCRASH 1
#define MAXFAIL 1
#define MAXEXPIRE 2
#define MAXRENEW 2

mtype = { FREE, INFLIGHT, COMPLETED };

mtype state = FREE;
byte owner = 0;        /* fencing token of the in-flight record's owner; 0 = none */
bool leaseLive = false;
byte nextToken = 1;    /* tokens handed out so far + 1: the newest is nextToken - 1 */
byte completions = 0;  /* completed executions: executions whose outcome the store accepted */
byte executions = 0;   /* handler runs (at most once per lease; duplicates here are the documented window) */
byte crashes = 0;
byte crashedTok = 0;   /* the token of an owner that crashed while holding the key */
byte fails = 0;
byte expiries = 0;

#ifdef NO_FENCE
#define OWNS(t) (state == INFLIGHT)
#else
#define OWNS(t) (state == INFLIGHT && owner == t)
#endif

#ifdef NO_TAKEOVER
#define CLAIMABLE (state == FREE)
#else
#define CLAIMABLE (state == FREE || (state == INFLIGHT && !leaseLive))
#endif

/* The lease's clock: any live lease may run out; a crashed owner's always can (weak fairness makes it happen). */
active proctype Clock()
{
  do
  :: atomic { leaseLive && (expiries < MAXEXPIRE || (crashedTok != 0 && owner == crashedTok)) ->
       leaseLive = false;
       if
       :: expiries < MAXEXPIRE -> expiries++
       :: else -> skip
       fi }
  :: atomic { state == COMPLETED -> break }
  od
}

active [W] proctype Worker()
{
  byte tok;
  byte renewals;
  bool ok;

retry:
  /* TryClaim: one atomic store step. */
  atomic {
    if
    :: state == COMPLETED -> goto done            /* replay the stored response */
    :: CLAIMABLE ->                               /* fresh claim or takeover of an expired lease */
         tok = nextToken; nextToken++;
         state = INFLIGHT; owner = tok; leaseLive = true
    :: else -> tok = 0                            /* in flight elsewhere: wait (notification or poll), re-claim */
    fi
  }
  if
  :: tok == 0 -> goto retry
  :: else -> skip
  fi

  /* Owner: the heartbeat renews while the handler runs (a handler runs for a finite time: at most MAXRENEW
     renewals); a refused renewal cancels the work (lease lost). */
  renewals = 0;
  do
  :: renewals < MAXRENEW -> renewals++;
     atomic { if
              :: OWNS(tok) -> leaseLive = true; ok = true
              :: else -> ok = false
              fi }
     if
     :: !ok -> goto retry                          /* fenced: the work is cancelled; the client retries */
     :: else -> skip
     fi
  :: atomic { crashes < MAXCRASH -> crashes++; crashedTok = tok } -> goto crashed
  :: break
  od;

  executions++;

  if
  :: atomic { fails < MAXFAIL -> fails++ } ->
       /* The handler threw or answered 5xx: release, so a retry runs again. */
       atomic { if
#ifdef RELEASE_ANY
                :: true -> state = FREE; owner = 0; leaseLive = false
#else
                :: OWNS(tok) -> state = FREE; owner = 0; leaseLive = false
#endif
                :: else -> skip
                fi }
       goto retry
  :: atomic { crashes < MAXCRASH -> crashes++; crashedTok = tok } -> goto crashed
  :: atomic {
       if
       :: OWNS(tok) ->
            state = COMPLETED; owner = tok; leaseLive = false;
            completions++;
            assert(completions <= 1);             /* at most one completed execution per key */
            assert(tok == nextToken - 1)          /* a stale owner never completes */
       :: else -> skip                            /* fenced: nothing written; the caller replays the winner */
       fi }
       goto retry
  fi;

done:
  skip;
crashed:
  skip
}

ltl crashed_key_freed { [] ((crashedTok != 0) -> <> !(state == INFLIGHT && owner == crashedTok)) }
ltl final_answer { <> (state == COMPLETED) }
