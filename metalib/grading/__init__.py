"""Grading without Docker: a folder of submitted notebooks -> scores per student and question.

See `folder.grade_folder` (the command ``python -m metalib grade``), `runner` (one submission in
a fresh kernel, robust to broken notebooks), `assignment` (questions and tests read from the
master notebook) and `references` (answers that call metalib instead of solving).
"""
from .assignment import Assignment, Question, TestCode
from .folder import StudentResult, grade_folder, grade_submission, write_reports

__all__ = ["Assignment", "Question", "TestCode", "StudentResult", "grade_folder", "grade_submission",
           "write_reports"]
