#!/usr/bin/env python3
"""Fills a Portcullis SQLite store for benches/scale.sh, fast: bulk inserts, not the CLI.

    scale_fill.py DB USERS SESSIONS REMEMBER EVENTS PASSWORD_HASH TOKENS_FILE

DB must already hold the schema (any `portcullis` command on the config makes it). Users are
user<N>@example.com, all with PASSWORD_HASH (hashing a million passwords would take hours);
session N belongs to user N mod USERS, is live (last seen now) and its cookie value is line N
of TOKENS_FILE; remember-me tokens and events are spread over the users, events one every
3 seconds back from now, from addresses 10.x.y.z, each with its address key.
"""
import base64
import hashlib
import os
import sqlite3
import sys
import time


def token():
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def main():
    db, users, sessions, remember, events, password_hash, tokens_file = sys.argv[1:8]
    users, sessions, remember, events = int(users), int(sessions), int(remember), int(events)
    now = int(time.time())
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    started = time.time()

    def login(n):
        return f"user{n}@example.com"

    con.executemany(
        "INSERT INTO users (id, login, login_key, email, email_key, name, groups, password_hash, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, '[\"staff\"]', ?, ?)",
        ((n + 1, login(n), login(n), login(n), login(n), f"User {n}", password_hash, now)
         for n in range(users)),
    )
    with open(tokens_file, "w") as out:
        def session_rows():
            for n in range(sessions):
                t = token()
                out.write(t + "\n")
                yield (hashlib.sha256(t.encode()).digest(), n % users + 1, now, now, "10.0.0.1", "scale")
        con.executemany(
            "INSERT INTO sessions (id_hash, user_id, created_at, last_seen, ip, user_agent)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            session_rows(),
        )
    con.executemany(
        "INSERT INTO remember_tokens (selector, validator_hash, user_id, expires_at) VALUES (?, ?, ?, ?)",
        ((token()[:22], os.urandom(32), n % users + 1, now + 30 * 86400) for n in range(remember)),
    )
    kinds = ["login_success", "login_failure", "logout", "ip_denied", "session_expired"]

    def event_rows():
        for i in range(events):
            a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
            key = bytes(10) + b"\xff\xff" + bytes([10, a, b, c])
            yield (now - (events - i) * 3, kinds[i % 5], login(i % users), f"10.{a}.{b}.{c}",
                   "Mozilla/5.0", key)
    con.executemany(
        "INSERT INTO events (ts, event, login, ip, user_agent, ip_key) VALUES (?, ?, ?, ?, ?, ?)",
        event_rows(),
    )
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    print(f"filled {users} users, {sessions} sessions, {remember} remember-me tokens, "
          f"{events} events in {time.time() - started:.0f} s")


main()
