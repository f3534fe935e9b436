"""How a round's prompts are combined: in the clear, under SecAgg+ or under differential
privacy — the run config's ``privacy`` chooses, on the server and on every node alike.

``none``
    The server receives each client's trained global prompt and averages them with fedotp's
    aggregator (weights: training-set sizes) — bit for bit ``fedotp train``'s server step.
``secagg``
    Flower's SecAgg+ (``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the nodes):
    each node scales its prompt by ``samples / secagg-max-weight``, clips it to
    ``±secagg-clipping-range``, quantises it to ``secagg-quantization-range`` levels and masks
    it; the server learns only the sum, hence the weighted average, up to the quantisation
    error (bounded in docs/FLOWER.md).
``dp-server`` / ``dp-client``
    Central differential privacy with fixed clipping (Flower's
    ``DifferentialPrivacyServerSideFixedClipping`` / ``...ClientSideFixedClipping`` around
    its ``FedAvg``, with ``fixedclipping_mod`` on the nodes for ``dp-client``): each update
    (trained prompt − global prompt) is clipped to L2 norm ``dp-clipping-norm``, and Gaussian
    noise of standard deviation ``dp-noise-multiplier × dp-clipping-norm / clients`` is added
    to the average. Flower's strategy samples the nodes (``fraction_train`` =
    ``federation.frac``) and weighs them by ``num-examples``, the same rule in float64.
"""

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple, Union

import numpy as np
from flwr.app import ConfigRecord, Context, Message

from .records import PROMPT, count, number, prompt_of, prompt_record, train_stats

if TYPE_CHECKING:
    from .server_app import Federation

Stats = Dict[str, Any]
#: A round's outcome: each trained client's statistics, what failed, and the new prompt.
RoundResult = Tuple[Dict[int, Stats], List[str], np.ndarray]

MODES = ("none", "secagg", "dp-server", "dp-client")


def mode_name(context: Context) -> str:
    mode = str(context.run_config.get("privacy", "none"))
    if mode not in MODES:
        raise ValueError(f"privacy = {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def client_mod(message: Message, context: Context, call_next: Callable[..., Message]) -> Message:
    """The nodes' side of the run's privacy mode (a ClientApp's mods are fixed when it is
    built; the run config is known only per message)."""
    mode = mode_name(context)
    if mode == "secagg":
        from flwr.client.mod import secaggplus_mod

        return secaggplus_mod(message, context, call_next)
    # fixedclipping_mod takes every message for a train message: give it only those.
    if mode == "dp-client" and message.metadata.message_type == "train":
        from flwr.clientapp.mod import fixedclipping_mod

        return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


def _failure(reply: Message) -> str:
    return f"node {reply.metadata.src_node_id}: {reply.error.reason}"


class Plain:
    """Prompts in the clear, averaged by fedotp's aggregator."""

    def train_round(self, fed: "Federation", round: int, prompt: np.ndarray) -> RoundResult:
        sampled = fed.plan.sampled_clients(round)
        failed = [f"partition {c}: no node" for c in sampled if c not in fed.node_of]
        updates: Dict[int, Tuple[int, np.ndarray]] = {}
        trained: Dict[int, Stats] = {}
        replies = fed.exchange(fed.train_messages(round, sampled, prompt))
        for reply in replies:
            client = fed.client_of(reply)
            if client is None:
                continue
            if reply.has_error():
                failed.append(f"partition {client}: {_failure(reply)}")
                continue
            trained_prompt = prompt_of(reply)
            if trained_prompt is None or trained_prompt.shape != prompt.shape:
                failed.append(f"partition {client}: a reply without a prompt of {prompt.shape}")
                continue
            metrics = reply.content.metric_records["metrics"]
            updates[client] = (count(metrics, "num-examples"), trained_prompt)
            trained[client] = train_stats(metrics)
        answered = {fed.client_of(r) for r in replies}
        failed += [
            f"partition {c}: no reply" for c in sampled if c in fed.node_of and c not in answered
        ]
        if not updates:
            return trained, failed, prompt
        return trained, failed, fed.aggregate(round, updates)


class CentralDp:
    """Flower's central-DP wrappers with fixed clipping around its FedAvg."""

    def __init__(self, context: Context, fed: "Federation", client_side: bool) -> None:
        from flwr.serverapp.strategy import (
            DifferentialPrivacyClientSideFixedClipping,
            DifferentialPrivacyServerSideFixedClipping,
            FedAvg,
        )

        settings = context.run_config
        # Clients per round after round 0 (which trains all): federation.frac of them.
        sampled = len(fed.plan.sampled_clients(1))
        inner = FedAvg(
            fraction_train=1.0 if sampled == fed.clients else sampled / fed.clients,
            min_train_nodes=sampled,
            min_available_nodes=fed.clients,
        )
        wrapper = (
            DifferentialPrivacyClientSideFixedClipping
            if client_side
            else DifferentialPrivacyServerSideFixedClipping
        )
        self.strategy = wrapper(
            inner,
            noise_multiplier=number(settings, "dp-noise-multiplier"),
            clipping_norm=number(settings, "dp-clipping-norm"),
            num_sampled_clients=sampled,
        )

    def train_round(self, fed: "Federation", round: int, prompt: np.ndarray) -> RoundResult:
        arrays = prompt_record(prompt)
        config = ConfigRecord({"plan": fed.plan.toml})
        messages = list(self.strategy.configure_train(round, arrays, config, fed.grid))
        replies = fed.exchange(messages)
        failed = [_failure(r) for r in replies if r.has_error()]
        good = [r for r in replies if not r.has_error()]
        trained: Dict[int, Stats] = {}
        for reply in good:
            client = fed.client_of(reply)
            if client is not None:
                trained[client] = train_stats(reply.content.metric_records["metrics"])
        aggregated, _ = self.strategy.aggregate_train(round, good)
        if aggregated is None:
            return {}, failed + ["the strategy aggregated nothing"], prompt
        return trained, failed, np.ascontiguousarray(aggregated[PROMPT].numpy(), dtype=np.float32)


class SecAggPlus:
    """Flower's SecAgg+ on its legacy workflow, one fedotp round per workflow run: the
    round's clients mask their scaled, quantised prompts; the server unmasks only the sum."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def train_round(self, fed: "Federation", round: int, prompt: np.ndarray) -> RoundResult:
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server import LegacyContext, ServerConfig
        from flwr.server.strategy import FedAvg
        from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

        sampled = [c for c in fed.plan.sampled_clients(round) if c in fed.node_of]
        nodes = {fed.node_of[c]: c for c in sampled}
        outcome: Dict[str, Any] = {"trained": {}, "failed": [], "prompt": prompt}

        class RoundStrategy(FedAvg):
            """The round's clients; the unmasked average is what SecAgg+ hands over."""

            def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
                from flwr.common import FitIns

                client_manager.wait_for(len(nodes), timeout=fed.reply_timeout)
                config: Dict[str, Union[bool, bytes, float, int, str]] = {
                    "plan": fed.plan.toml,
                    "server-round": round,
                }
                return [
                    (proxy, FitIns(parameters, config))
                    for proxy in client_manager.all().values()
                    if proxy.node_id in nodes
                ]

            def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
                for proxy, fit_res in results:
                    outcome["trained"][nodes[proxy.node_id]] = train_stats(fit_res.metrics)
                outcome["failed"] += [str(f) for f in failures]
                if results:
                    # SecAgg+ replaced every FitRes's parameters with the unmasked average.
                    average = parameters_to_ndarrays(results[0][1].parameters)[0]
                    outcome["prompt"] = np.ascontiguousarray(
                        average.reshape(prompt.shape), dtype=np.float32
                    )
                return None, {}

        strategy = RoundStrategy(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=len(nodes),
            min_available_clients=len(nodes),
            initial_parameters=ndarrays_to_parameters([prompt]),
        )
        settings = self.context.run_config
        workflow = SecAggPlusWorkflow(
            num_shares=int(number(settings, "secagg-num-shares")),
            reconstruction_threshold=int(number(settings, "secagg-reconstruction-threshold")),
            max_weight=number(settings, "secagg-max-weight"),
            clipping_range=number(settings, "secagg-clipping-range"),
            quantization_range=int(number(settings, "secagg-quantization-range")),
            timeout=fed.reply_timeout,
        )
        legacy = LegacyContext(
            self.context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=workflow)(fed.grid, legacy)
        return outcome["trained"], outcome["failed"], outcome["prompt"]


def server_mode(context: Context, fed: "Federation") -> Any:
    """The server's side of the run's privacy mode: an object whose ``train_round(fed, round,
    prompt)`` runs one round's training and aggregation."""
    mode = mode_name(context)
    if mode == "secagg":
        return SecAggPlus(context)
    if mode in ("dp-server", "dp-client"):
        return CentralDp(context, fed, client_side=mode == "dp-client")
    return Plain()

