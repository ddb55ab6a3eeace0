"""Grading without Docker: a folder of submitted notebooks -> scores per student and question.

See `folder.grade_folder` (the command ``python -m metalib grade``), `sandbox` (bubblewrap around
each submission), `runner` (one submission in a fresh kernel, inside the sandbox), `judge` (checks
computed and compared outside the student's process; `judges/` per assignment), `submission`
(reading careless notebooks), `assignment` (questions and tests read from the master),
`references` (answers that call or copy metalib instead of solving), `guard` (references a notebook
runs itself, raising once the probes run), `nbexec` (a notebook client that cannot sleep
through a kernel's reply) and `report`.
See docs/GRADING.md for what the sandbox guarantees.
"""
from .assignment import Assignment, Question, TestCode
from .folder import Grading, StudentResult, grade_folder, write_reports
from .sandbox import Limits, SandboxUnavailable

__all__ = ["Assignment", "Question", "TestCode", "StudentResult", "Grading", "grade_folder", "write_reports",
           "Limits", "SandboxUnavailable"]
