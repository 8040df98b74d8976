"""Models: loading (plain and sharded), the teacher and the student, the student's output head, export and hashes."""
