"""Every prompt the multi-agent systems send, in one readable place.

The task phrases the question itself (``Task.question_prompt``, which also says how to format the
answer); these templates only add the multi-agent parts. The debate wording follows Du et al.
(2023), "Improving Factuality and Reasoning in Language Models through Multiagent Debate".
"""

from __future__ import annotations

DEBATE_PEERS = (
    "These are the solutions to the problem from other agents:\n\n{peers}\n\n"
    "Using the reasoning from other agents as additional advice, can you give an updated answer? "
    "Examine your solution and the other agents' solutions step by step. "
    "State your final answer at the end in the format asked for in the question."
)

PEER_SOLUTION = "One agent solution: ```{text}```"

SUMMARIZER = (
    "{question}\n\nSeveral agents debated this problem. Their final solutions are:\n\n{peers}\n\n"
    "Summarise where they agree and disagree, decide which answer is right, and state the final answer "
    "at the end in the format asked for in the question."
)

MAX_PEER_CHARS = 2000
"""Peer solutions are cut to this length so a rambling agent cannot blow up everyone's context."""


def format_peers(texts: list[str]) -> str:
    return "\n\n".join(PEER_SOLUTION.format(text=t.strip()[:MAX_PEER_CHARS]) for t in texts)


def debate_followup(peer_texts: list[str]) -> str:
    return DEBATE_PEERS.format(peers=format_peers(peer_texts))


def summarizer_prompt(question: str, final_texts: list[str]) -> str:
    return SUMMARIZER.format(question=question, peers=format_peers(final_texts))


TEAM_CONTEXT = (
    "{question}\n\nA team of agents debated this problem. Their final solutions, the most agreed-on "
    "answer first:\n\n{peers}\n\nUsing the team's reasoning, solve the problem and state the final answer "
    "at the end in the format asked for in the question."
)

TEAM_SOLUTION = "Solution ({agree} of {total} agents reached this answer): ```{text}```"


def team_context(question: str, solutions: list[tuple[str, int, int]]) -> str:
    """The question plus the team's final solutions as ``(text, agents agreeing, agents)``: what an
    on-policy distillation teacher conditioned on the debate reads."""
    peers = "\n\n".join(
        TEAM_SOLUTION.format(agree=a, total=n, text=t.strip()[:MAX_PEER_CHARS]) for t, a, n in solutions
    )
    return TEAM_CONTEXT.format(question=question, peers=peers)
