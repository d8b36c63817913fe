"""What each registered objective is, as plain facts that config checks, the memory planner, model cards and
benchmarks read without importing torch. :data:`lcm_distill.objectives.OBJECTIVES` binds each kind to its
target-point function; tests/test_conventions.py keeps the two registries' keys equal."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectiveKind:
    label: str  # the method's name in model cards, logs and tables
    needs_teacher: bool  # a frozen teacher solves the PF-ODE for the target point (else the run starts from a student)
    uses_solver: bool  # objective.solver / objective.cfg_placement take part (the model card names the solver)
    card_sentence: str  # what the model card says the method is


# objective.kind -> facts. A new objective: one line here, one in objectives.OBJECTIVES (docs/extending.md).
OBJECTIVE_KINDS: dict[str, ObjectiveKind] = {
    "lcd": ObjectiveKind(
        "LCD", needs_teacher=True, uses_solver=True,
        card_sentence="Latent Consistency Distillation (LCM paper, Algorithm 1): the student learns to map any point "
        "of the teacher's classifier-free-guided probability-flow ODE to its origin, with ω-conditioning.",
    ),
    "lcf": ObjectiveKind(
        "LCF", needs_teacher=False, uses_solver=False,
        card_sentence="Latent Consistency Fine-tuning (LCM paper, Algorithm 4): teacher-free consistency training of a "
        "pretrained LCM on a custom dataset.",
    ),
}  # fmt: skip
