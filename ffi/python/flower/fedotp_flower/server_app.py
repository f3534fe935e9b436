"""The fedotp ServerApp: FedOTP's server on a Flower SuperLink.

Each round, the server sends the round's global prompt to the round's clients, averages the
prompts they send back weighted by their training-set sizes — with fedotp's own aggregator,
the rule of ``fedotp_core::protocol`` that ``fedotp train`` uses — and, when the run's schedule
says so, has every node evaluate the new prompt on its own test split. It writes a run
directory in ``fedotp train``'s format: ``config.toml``, ``metrics.jsonl``/``metrics.csv`` (one
row per client and a row of means per round), ``summary.json``, checkpoints holding the global
prompt, and ``federation.json`` (how each round went: nodes, failures, bytes, seconds).

Which client a node is comes from its ``partition-id`` (asked with a ``query`` message). The
clients of a round are the simulation's (``federation.frac``, ``federation.seed``), so a Flower
run of a configuration ends where ``fedotp train`` ends — except under differential privacy,
where Flower's strategy picks the nodes and adds noise (see ``privacy``). A node that fails or
does not answer in ``reply-timeout`` seconds is left out of the round (its state on the node
stays at its last completed round); a round with no update fails the run.

Run config (``pyproject.toml``'s ``[tool.flwr.app.config]``, ``flwr run --run-config``):
``fedotp-config``, ``fedotp-set``, ``out-dir``, ``privacy`` and its settings, ``node-timeout``
and ``reply-timeout``; see docs/FLOWER.md.
"""

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import fedotp
import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from . import privacy
from .records import count, number, payload_bytes, prompt_of, prompt_record

app = ServerApp()


class Federation:
    """The run's plan, the nodes serving its clients and the record of what happened."""

    def __init__(self, grid: Grid, context: Context) -> None:
        settings = context.run_config
        self.grid = grid
        self.settings = settings
        path = str(settings.get("fedotp-config", "")) or None
        overrides = [o.strip() for o in str(settings.get("fedotp-set", "")).split(";")]
        self.plan = fedotp.RunPlan.load(path, [o for o in overrides if o])
        clients = self.plan.clients
        if clients is None:
            raise ValueError(
                "the run configuration does not fix its number of clients (one client per "
                "domain): give the partition a number of clients"
            )
        self.clients: int = clients
        out_dir = str(settings.get("out-dir", "")) or None
        self.record = fedotp.RunRecord(self.plan, out_dir)
        self.reply_timeout = number(settings, "reply-timeout")
        self.node_of: Dict[int, int] = {}
        self.samples: Dict[int, int] = {}
        self.initial: Optional[np.ndarray] = None
        self.sent_bytes = 0
        self.received_bytes = 0
        self.log: Dict[str, Any] = {
            "run_dir": str(self.record.path),
            "flower_run_id": context.run_id,
            "privacy": str(settings.get("privacy", "none")),
            "clients": self.clients,
            "rounds": [],
            "status": "running",
        }
        self.write_log()

    def write_log(self) -> None:
        """``federation.json`` in the run directory, replaced atomically."""
        path = os.path.join(str(self.record.path), "federation.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.log, f, indent=1)
        os.replace(path + ".tmp", path)

    def config(self, **extra: Any) -> ConfigRecord:
        return ConfigRecord({"plan": self.plan.toml, **extra})

    def exchange(self, messages: List[Message]) -> List[Message]:
        """Sends ``messages`` and waits for their replies (at most ``reply-timeout`` s),
        counting the payload both ways."""
        if not messages:
            return []
        replies = list(self.grid.send_and_receive(messages, timeout=self.reply_timeout))
        self.sent_bytes += sum(payload_bytes(m) for m in messages)
        self.received_bytes += sum(payload_bytes(r) for r in replies if not r.has_error())
        return replies

    def discover(self, wait: bool) -> None:
        """Asks every node not yet known which client it is; with ``wait``, until every
        client has a node or ``node-timeout`` seconds have passed."""
        deadline = time.monotonic() + number(self.settings, "node-timeout")
        while True:
            live = set(self.grid.get_node_ids())
            # A restarted SuperNode comes back under a new node id.
            self.node_of = {c: n for c, n in self.node_of.items() if n in live}
            known = set(self.node_of.values())
            asks = [
                Message(RecordDict({"config": self.config()}), dst_node_id=n, message_type="query")
                for n in sorted(live - known)
            ]
            for reply in self.exchange(asks):
                if reply.has_error():
                    continue
                metrics = reply.content.metric_records["metrics"]
                client = count(metrics, "partition-id")
                if not 0 <= client < self.clients:
                    raise ValueError(
                        f"node {reply.metadata.src_node_id} says it is partition {client}, "
                        f"but the run has clients 0 to {self.clients - 1}"
                    )
                # A node that says it is a known client's is that client's SuperNode restarted:
                # the old node id is dead (Flower forgets it only when its heartbeat expires).
                self.node_of[client] = reply.metadata.src_node_id
                self.samples[client] = count(metrics, "num-examples")
                initial = prompt_of(reply)
                if initial is not None:
                    if self.initial is not None and not np.array_equal(initial, self.initial):
                        raise ValueError(
                            f"partition {client}'s initial prompt differs from the others': "
                            "the nodes run different fedotp versions or models"
                        )
                    self.initial = initial
            self.log["samples"] = {str(c): n for c, n in sorted(self.samples.items())}
            if not wait or len(self.node_of) == self.clients:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(range(self.clients)) - set(self.node_of))
                raise TimeoutError(f"no node serves partitions {missing}")
            time.sleep(0.5)

    def client_of(self, reply: Message) -> Optional[int]:
        for client, node in self.node_of.items():
            if node == reply.metadata.src_node_id:
                return client
        return None

    def train_messages(self, round: int, sampled: List[int], prompt: np.ndarray) -> List[Message]:
        return [
            Message(
                RecordDict(
                    {"arrays": prompt_record(prompt), "config": self.config(**{"server-round": round})}
                ),
                dst_node_id=self.node_of[c],
                message_type="train",
            )
            for c in sampled
            if c in self.node_of
        ]

    def aggregate(self, round: int, updates: Dict[int, Tuple[int, np.ndarray]]) -> np.ndarray:
        """The average of ``updates`` (client → samples, prompt) weighted by samples, added in
        client order through fedotp's aggregator (``fedotp train``'s rule and order)."""
        shape = next(iter(updates.values()))[1].shape
        rows, width = int(np.prod(shape[:-1])), int(shape[-1])
        aggregator = fedotp.Aggregator(n_ctx=rows, width=width, round=round, max_clients=len(updates))
        for client in sorted(updates):
            samples, prompt = updates[client]
            aggregator.add_update(round, client, samples, prompt.reshape(rows, width))
        return aggregator.average().reshape(shape)

    def evaluate(self, prompt: np.ndarray) -> Dict[int, Optional[Dict[str, float]]]:
        """Every node's evaluation of ``prompt`` on its test split (clients whose node failed
        are absent)."""
        messages = [
            Message(
                RecordDict({"arrays": prompt_record(prompt), "config": self.config()}),
                dst_node_id=node,
                message_type="evaluate",
            )
            for node in self.node_of.values()
        ]
        results: Dict[int, Optional[Dict[str, float]]] = {}
        for reply in self.exchange(messages):
            client = self.client_of(reply)
            if client is None or reply.has_error():
                continue
            m = reply.content.metric_records["metrics"]
            results[client] = (
                {
                    "accuracy": number(m, "accuracy"),
                    "macro_f1": number(m, "macro-f1"),
                    "macro_f1_true_labels": number(m, "macro-f1-true-labels"),
                }
                if count(m, "has-test")
                else None
            )
        return results


@app.main()
def main(grid: Grid, context: Context) -> None:
    fed = Federation(grid, context)
    try:
        run(fed, context)
    except BaseException as error:
        # `flwr run` reports success whatever happens here: federation.json says how it ended.
        fed.log["status"] = "failed"
        fed.log["error"] = f"{type(error).__name__}: {error}"
        fed.write_log()
        raise


def run(fed: Federation, context: Context) -> None:
    fed.discover(wait=True)
    if fed.initial is None:
        raise ValueError(f"{fed.plan.method} shares no prompt: there is nothing to federate")
    mode = privacy.server_mode(context, fed)
    prompt = fed.initial
    for round in range(fed.plan.rounds):
        started = time.monotonic()
        fed.sent_bytes = fed.received_bytes = 0
        fed.discover(wait=False)
        entry: Dict[str, Any] = {"round": round}
        trained, failed, prompt = mode.train_round(fed, round, prompt)
        entry["trained"] = sorted(trained)
        entry["failed"] = failed
        if not trained:
            raise RuntimeError(f"round {round}: no client sent an update ({failed})")
        rows: Dict[int, Dict[str, Any]] = {c: {"client": c, "train": s} for c, s in trained.items()}
        if fed.plan.evaluates(round):
            for client, stats in fed.evaluate(prompt).items():
                rows.setdefault(client, {"client": client})["eval"] = stats
            entry["evaluated"] = sorted(c for c in rows if "eval" in rows[c])
        fed.record.record_round(round, list(rows.values()))
        fed.record.save_global(round, prompt)
        entry["seconds"] = time.monotonic() - started
        entry["payload_bytes"] = {"to_nodes": fed.sent_bytes, "from_nodes": fed.received_bytes}
        fed.log["rounds"].append(entry)
        fed.write_log()
    summary = fed.record.finish()
    fed.log["status"] = "done"
    fed.log["summary"] = summary
    fed.write_log()
    if summary:
        print(f"{fed.plan.method}: {fed.record.path}\n{summary}")
