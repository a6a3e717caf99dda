"""The pure feedback policy: one metric window in, one decision and the next state out.

Order of concerns, most urgent first:
1. SLO (p99 latency budget, failure ratio). A breach must hold for ``badWindows`` consecutive
   windows (hysteresis) before anything is done, and nothing is done during the cooldown
   after an action. Remedies escalate from cheap to expensive: retune the serving config when
   the time goes to queueing (shorter batching delay, more instances while the pool has room),
   re-optimize with the observed traffic when compute is the problem or retuning is used up,
   fall back to the runner-up when a re-optimization did not fix it or none is allowed today.
2. Response cache: off when its hit ratio is low and lookups cost more than hits save; back on
   after a while to measure again (Triton reports hits only while the cache is on).
3. Traffic shift: batches far larger than any the winner was benchmarked at -> re-optimize.

Windows that are idle, or that start before the last action took effect, are no evidence:
they neither extend nor break a streak.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from honed.api.spec import Feedback
from honed.feedback.decisions import Decision, Fallback, Keep, Reoptimize, Retune
from honed.feedback.judge import Verdict, batch_profile, judge, observed_concurrency, observed_numbers, rounded
from honed.feedback.policy_inputs import Deployment, FeedbackState, Option
from honed.feedback.window import MetricWindow

# A streak survives one missing window (Prometheus blip, idle minute) but not a long gap.
STREAK_GAP_INTERVALS = 2.5
# Part of the window that may predate the last action (the action lands mid-interval).
ACTION_OVERLAP = 0.1
MIN_CACHE_LOOKUPS = 20
# Busy fraction per instance above which another instance is worth its memory.
BUSY_FOR_MORE_INSTANCES = 0.7
# A batching delay under this share of the budget is not what breaks the budget.
QUEUE_DELAY_SHARE = 0.1


@dataclass(frozen=True)
class PolicyResult:
    """What ``decide`` returns: the decision, the memory to persist, and the SLOMet verdict."""

    decision: Decision
    state: FeedbackState
    verdict: Verdict


def runner_up(
    options: list[Option],
    deployment: Deployment,
    state: FeedbackState,
    window: MetricWindow,
    slo: Feedback,
) -> tuple[Option, float] | None:
    """The best other accepted candidate whose benchmark fits the budget at the observed batch."""
    batch = window.batch.exec_p90 or window.avg_batch_size or 1.0
    current = f"{deployment.candidate}@{deployment.pool}"
    budget_ms = slo.p99_latency_ms
    ranked = []
    for option in options:
        if option.key == current or option.key in state.fallen_back_from:
            continue
        p99 = option.p99_ms_at(batch)
        if p99 is None or (budget_ms is not None and p99 > budget_ms):
            continue
        ranked.append((p99, option.pool == deployment.pool, option.key, option))
    if not ranked:
        return None
    p99, _, _, best = min(ranked)  # lowest p99; on a tie prefer the other pool
    return best, p99


class _Policy:
    def __init__(
        self,
        window: MetricWindow,
        slo: Feedback,
        deployment: Deployment,
        options: list[Option],
        state: FeedbackState,
        now: datetime,
    ) -> None:
        self.window, self.slo, self.deployment, self.options = window, slo, deployment, options
        self.state, self.now = state, now
        self.numbers = observed_numbers(window)
        self.numbers["budgetMs"] = slo.p99_latency_ms

    # -- building blocks -----------------------------------------------------------------------

    def keep(self, reason: str) -> Decision:
        return Keep(reason=reason, numbers=dict(self.numbers))

    def acted(self, decision: Decision) -> Decision:
        """Record an action in the state: counters restart, the cooldown begins."""
        update: dict[str, object] = {
            "last_action_at": self.now,
            "bad_windows": 0,
            "last_bad_end": None,
            "cache_bad_windows": 0,
            "shift_windows": 0,
        }
        if isinstance(decision, Retune):
            update["retunes"] = self.state.retunes + 1
            if decision.response_cache is False:
                update["cache_disabled_at"] = self.now
            elif decision.response_cache is True:
                update["cache_disabled_at"] = None
        elif isinstance(decision, Reoptimize):
            update["reoptimizations"] = [*self.state.reoptimizations, self.now]
            update["episode_reoptimized"] = decision.trigger == "SLOViolation"
        elif isinstance(decision, Fallback):
            current = f"{self.deployment.candidate}@{self.deployment.pool}"
            update["fallen_back_from"] = [*self.state.fallen_back_from, current]
        self.state = self.state.model_copy(update=update)
        return decision

    def reoptimize(self, trigger: Literal["SLOViolation", "TrafficShift"], reason: str) -> Decision:
        sizes = batch_profile(self.window, self.deployment)
        concurrency = observed_concurrency(self.window)
        numbers = {**self.numbers, "benchmarkBatchSizes": str(sizes), "benchmarkConcurrency": concurrency}
        return Reoptimize(trigger=trigger, batch_sizes=sizes, concurrency=concurrency, reason=reason, numbers=numbers)

    def fallback(self, reason: str) -> Decision | None:
        found = runner_up(self.options, self.deployment, self.state, self.window, self.slo)
        if found is None:
            return None
        option, p99 = found
        numbers = {**self.numbers, "runnerUpP99Ms": rounded(p99)}
        return Fallback(candidate=option.name, pool=option.pool, reason=reason, numbers=numbers)

    def cache_costs(self) -> bool | None:
        """True: the cache costs more than it saves; None: not enough lookups to tell."""
        cache, window = self.window.cache, self.window
        if not self.deployment.response_cache or cache is None:
            return None
        if cache.lookup_rate * window.seconds < MIN_CACHE_LOOKUPS or cache.hit_ratio is None:
            return None
        ratio = cache.hit_ratio
        compute = window.compute.mean_us or 0.0
        saving = ratio * max(0.0, compute - (cache.hit_mean_us or 0.0))
        cost = (1.0 - ratio) * (cache.miss_mean_us or 0.0)
        self.numbers.update(cacheSavingUs=rounded(saving), cacheCostUs=rounded(cost))
        return ratio < self.slo.cache_min_hit_ratio and cost >= saving

    def traffic_shifted(self) -> bool:
        benchmarked = self.deployment.benchmarked_batch_sizes
        observed = self.window.batch.exec_p90 or self.window.avg_batch_size
        if not benchmarked or observed is None:
            return False
        return observed > self.slo.traffic_shift_factor * max(benchmarked)

    # -- the decision --------------------------------------------------------------------------

    def run(self) -> PolicyResult:
        verdict = judge(self.window, self.slo, self.deployment)
        last = self.state.last_action_at
        if last is not None and self.window.start < last - timedelta(seconds=ACTION_OVERLAP * self.window.seconds):
            reason = f"window starts before the last action ({last.isoformat()}); waiting for fresh evidence"
            return PolicyResult(self.keep(reason), self.state, verdict)
        if verdict.reason == "Idle":
            return PolicyResult(self.keep(verdict.message), self.state, verdict)
        self._count(verdict)
        return PolicyResult(self._decide(verdict), self.state, verdict)

    def _count(self, verdict: Verdict) -> None:
        state, window = self.state, self.window
        update: dict[str, object] = {}
        if verdict.status == "False":
            gap = STREAK_GAP_INTERVALS * self.slo.interval_s
            fresh = state.last_bad_end is None or (window.end - state.last_bad_end).total_seconds() > gap
            update["bad_windows"] = 1 if fresh else state.bad_windows + 1
            update["last_bad_end"] = window.end
        elif verdict.status == "True":
            update.update(bad_windows=0, last_bad_end=None, episode_reoptimized=False)
        cache_costs = self.cache_costs()
        if cache_costs is not None:
            update["cache_bad_windows"] = state.cache_bad_windows + 1 if cache_costs else 0
        update["shift_windows"] = state.shift_windows + 1 if self.traffic_shifted() else 0
        self.state = state.model_copy(update=update)
        self.numbers.update(
            badWindows=self.state.bad_windows,
            cacheBadWindows=self.state.cache_bad_windows,
            shiftWindows=self.state.shift_windows,
        )

    def _decide(self, verdict: Verdict) -> Decision:
        state, slo = self.state, self.slo
        needed = slo.bad_windows
        cooldown_until = state.in_cooldown(self.now, slo.cooldown_s)
        if verdict.status == "False":
            if state.bad_windows < needed:
                return self.keep(f"{verdict.message} in {state.bad_windows}/{needed} consecutive windows")
            if cooldown_until is not None:
                return self.keep(f"{verdict.message}; cooldown after the last action until {cooldown_until}")
            if self.deployment.optimizing:
                return self.keep(f"{verdict.message}; an optimization is already running")
            return self._remedy(verdict)
        if cooldown_until is None and state.cache_bad_windows >= needed:
            return self.acted(
                Retune(
                    response_cache=False,
                    reason=f"response cache hit ratio {self.numbers['cacheHitRatio']} < "
                    f"{slo.cache_min_hit_ratio:g} and lookups cost more than hits save",
                    numbers=dict(self.numbers),
                )
            )
        probe = self._cache_probe()
        if probe is not None and cooldown_until is None:
            return self.acted(probe)
        if cooldown_until is None and state.shift_windows >= needed and not self.deployment.optimizing:
            blocked = state.reoptimization_blocked(slo.max_reoptimizations_per_day)
            if blocked is None:
                largest = max(self.deployment.benchmarked_batch_sizes)
                return self.acted(
                    self.reoptimize(
                        "TrafficShift",
                        f"batches of {self.numbers['batchP90']} seen, benchmarked only up to {largest}",
                    )
                )
        return self.keep(self._calm_reason(verdict))

    def _calm_reason(self, verdict: Verdict) -> str:
        cache = self.window.cache
        if self.deployment.response_cache and cache is not None and cache.hit_ratio is not None:
            return f"{verdict.message}; response cache hit ratio {cache.hit_ratio:.2f}"
        return verdict.message

    def _cache_probe(self) -> Decision | None:
        disabled = self.state.cache_disabled_at
        if self.deployment.response_cache or not self.deployment.cache_allowed or disabled is None:
            return None
        if (self.now - disabled).total_seconds() < self.slo.cache_probe_s:
            return None
        return Retune(
            response_cache=True,
            reason="the cache has been off since "
            f"{disabled.isoformat()}; turning it on again to measure how often requests repeat",
            numbers=dict(self.numbers),
        )

    def _remedy(self, verdict: Verdict) -> Decision:
        """A breach held long enough and no cooldown: choose the cheapest remedy that can work."""
        if verdict.reason == "LatencyOverBudget" and self.state.retunes < self.slo.max_retunes:
            retune = self._retune(verdict)
            if retune is not None:
                return self.acted(retune)
        blocked = self.state.reoptimization_blocked(self.slo.max_reoptimizations_per_day)
        if verdict.reason == "FailuresOverBudget" or self.state.episode_reoptimized or blocked:
            why = (
                "failing requests"
                if verdict.reason == "FailuresOverBudget"
                else "re-optimizing did not restore the SLO"
                if self.state.episode_reoptimized
                else str(blocked)
            )
            fallback = self.fallback(f"{verdict.message}; {why}")
            if fallback is not None:
                return self.acted(fallback)
            if blocked is not None:
                return self.keep(f"{verdict.message}; {blocked}, and no runner-up fits the budget")
        return self.acted(
            self.reoptimize(
                "SLOViolation",
                f"{verdict.message} for {self.state.bad_windows} windows and retuning cannot fix it",
            )
        )

    def _retune(self, verdict: Verdict) -> Retune | None:
        window, deployment = self.window, self.deployment
        queue, compute = window.queue.quantiles.p99, window.compute.quantiles.p99
        if queue is None or (compute is not None and queue < compute):
            return None  # compute dominates: configuration cannot buy that time back
        budget = self.slo.p99_budget_us or 0.0
        response_cache = False if self.state.cache_bad_windows >= self.slo.bad_windows else None
        delay = deployment.max_queue_delay_us
        if delay > 0 and delay >= QUEUE_DELAY_SHARE * budget:
            new_delay = delay // 2 if delay // 2 >= 100 else 0
            return Retune(
                max_queue_delay_us=new_delay,
                response_cache=response_cache,
                reason=f"{verdict.message}; queueing dominates (p99 {queue / 1000:.1f} ms) and the "
                f"batching delay of {delay} us is a large part of the budget",
                numbers=dict(self.numbers),
            )
        compute_mean = window.compute.mean_us
        if compute_mean is None:
            return None
        busy = window.exec_rate * compute_mean / 1e6 / max(1, deployment.instance_count)
        self.numbers["busyPerInstance"] = rounded(busy)
        if busy >= BUSY_FOR_MORE_INSTANCES and deployment.instance_count < deployment.max_instances:
            return Retune(
                instance_count=deployment.instance_count + 1,
                response_cache=response_cache,
                reason=f"{verdict.message}; requests queue (p99 {queue / 1000:.1f} ms) while each "
                f"instance is busy {busy:.0%} of the time",
                numbers=dict(self.numbers),
            )
        return None


def decide(
    window: MetricWindow,
    slo: Feedback,
    deployment: Deployment,
    options: list[Option],
    state: FeedbackState,
    now: datetime,
) -> PolicyResult:
    """Decide what to do about one window. Pure: same inputs, same result."""
    state = state.for_deployment(deployment, now)
    return _Policy(window, slo, deployment, options, state, now).run()
