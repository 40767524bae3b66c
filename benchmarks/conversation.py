"""Conversation cost: a 50-turn chat that resends its history every turn, counted at the fake scanner.

Each turn adds a user message and the provider's reply; the gateway scans each message with the tail of the one
before it, so only the two new units of a turn reach the scanner, the rest are cache hits. The last column is what
scanning every message of every request would have cost::

    /opt/lockllm-venv/bin/python benchmarks/conversation.py [--turns 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, post, table  # noqa: E402

SYSTEM = "You are a careful assistant for a small bakery. Answer briefly and politely. " * 3


def user_message(turn: int) -> str:
    return (f"Turn {turn}: could you tell me more about the sourdough schedule for day {turn}, "
            "including feeding times, hydration and when to shape the loaves? ") * (1 + turn % 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--reply-chars", type=int, default=600)
    args = parser.parse_args()
    rows, totals = [], {"calls": 0, "chars": 0, "rescan": 0}
    with Stack() as stack:
        gateway = stack.serve("gateway", "werkzeug")
        messages = [{"role": "system", "content": SYSTEM}]
        stack.scanner_reset()
        for turn in range(1, args.turns + 1):
            messages.append({"role": "user", "content": user_message(turn)})
            before = stack.scanner_stats()
            status, data = post(gateway.url + CHAT_PATH, json.dumps({"model": "bench", "messages": messages}).encode(),
                                {"X-Bench-Reply-Chars": str(args.reply_chars)})
            assert status == 200, data
            after = stack.scanner_stats()
            reply = json.loads(data)["choices"][0]["message"]["content"] + f" (reply {turn})"
            sent = sum(len(m["content"]) for m in messages)
            calls, chars = after["calls"] - before["calls"], after["chars"] - before["chars"]
            totals["calls"] += calls
            totals["chars"] += chars
            totals["rescan"] += sent
            if turn in (1, 2, 3, 5, 10, 20, 30, 40, 50) or turn == args.turns:
                rows.append([turn, len(messages), sent, calls, chars, totals["chars"], totals["rescan"]])
            messages.append({"role": "assistant", "content": reply})
        chat_chars = sum(len(m["content"]) for m in messages[:-1])  # everything the chat ever sent
    print(table(["turn", "messages", "chars sent", "scan calls", "chars scanned", "cum. scanned",
                 "cum. if rescanned whole"], rows))
    print(f"\nchat length {chat_chars} chars; scanned {totals['chars']} chars in {totals['calls']} calls "
          f"= {totals['chars'] / chat_chars:.2f}x the chat; rescanning every message every turn: "
          f"{totals['rescan']} chars = {totals['rescan'] / chat_chars:.1f}x")


if __name__ == "__main__":
    main()
