"""Every registered benchmark's loader on a small local fixture written in that benchmark's real format
(file kind and columns as distributed), its grader against hand labels, the clear error for a file
lacking a benchmark's fields, and the real AIME25/AMC23/MATH500 files when the shared folder exists."""

import csv
import json
import os

import pytest

from npr.eval import BENCHMARKS, BenchmarkError, get_benchmark, grade_sample, load_benchmark

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data", "benchmarks")
SHARED = os.environ.get("NPR_SHARED_BENCHMARKS", "/work/shared/data/benchmarks" if os.path.isdir(
    "/work/shared/data/benchmarks") else SHARED)


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def _jsonl(path, rows):
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")


def _json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


OPTIONS10 = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]

# name -> (file name, writer, rows, [(correct response, wrong response)] per row)
FIXTURES = {
    "aime24": ("aime_2024.parquet", _parquet, [
        {"id": 60, "problem": "Find x if x+1=71.", "solution": "x=70", "answer": "70", "url": "u", "year": "2024"},
        {"id": 61, "problem": "Compute 12*12.", "solution": "...", "answer": "144", "url": "u", "year": "2024"}],
        [("so \\boxed{70}", "so \\boxed{71}"), ("\\boxed{144}", "\\boxed{12}")]),
    "aime25": ("aime2025-I.jsonl", _jsonl, [
        {"question": "Find the sum of all integer bases $b>9$ ...", "answer": "70"},
        {"question": "Find the area ...", "answer": "588"}],
        [("\\boxed{70}", "\\boxed{7}"), ("the area is \\boxed{588}", "\\boxed{589}")]),
    "hmmt25": ("hmmt_feb_2025.parquet", _parquet, [
        {"problem_idx": 1, "problem": "Compute the sum ...", "answer": "\\frac{9}{2}", "problem_type": ["Algebra"]},
        {"problem_idx": 2, "problem": "Find r ...", "answer": "\\sqrt{2}", "problem_type": ["Geometry"]}],
        [("\\boxed{4.5}", "\\boxed{\\frac{9}{4}}"), ("\\boxed{\\sqrt{2}}", "\\boxed{2}")]),
    "olympiadbench": ("OE_TO_maths_en_COMP.json", _json, [
        {"id": 1606, "question": "Find the smallest n ...", "solution": ["..."], "final_answer": ["$12$"],
         "context": None, "image_1": None, "modality": "Text-only", "difficulty": "Competition",
         "is_multiple_answer": False, "unit": None, "answer_type": "Numerical", "error": None,
         "question_type": "Open-ended", "subfield": "Combinatorics", "subject": "Math", "language": "English"},
        {"id": 1607, "question": "Find all a ...", "solution": ["..."], "final_answer": ["$\\frac{1}{3}$"],
         "context": "Let f be a function.", "image_1": None, "modality": "Text-only", "difficulty": "Competition",
         "is_multiple_answer": False, "unit": None, "answer_type": "Expression", "error": None,
         "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math", "language": "English"}],
        [("\\boxed{12}", "\\boxed{13}"), ("\\boxed{1/3}", "\\boxed{3}")]),
    "minerva": ("minervamath.jsonl", _jsonl, [
        {"question": "Compute the wavelength ...", "answer": "0.5"},
        {"question": "What is the mass ...", "answer": "4.5 \\times 10^{33}"}],
        [("\\boxed{0.5}", "\\boxed{0.6}"), ("\\boxed{45\\times10^{32}}", "\\boxed{4.5\\times10^{32}}")]),
    "zebralogic": ("mc_mode.parquet", _parquet, [
        {"id": "lgp-test-2x2-1", "puzzle": "There are 2 houses ...", "question": "Who lives in house 1?",
         "choices": ["Eric", "Arnold"], "answer": "Arnold", "created_at": "2024-07-03"},
        {"id": "lgp-test-2x2-2", "puzzle": "There are 2 houses ...", "question": "What pet is in house 2?",
         "choices": ["cat", "dog", "fish"], "answer": "cat", "created_at": "2024-07-03"}],
        [("\\boxed{B}", "\\boxed{A}"), ("\\boxed{A}", "\\boxed{C}")]),
    "amc23": ("amc23.json", _json, [
        {"id": 0, "answer": 27.0, "url": "u", "question": "Cities $A$ and $B$ are $45$ miles apart ..."},
        {"id": 1, "answer": 36.0, "url": "u", "question": "Positive real numbers ..."}],
        [("\\boxed{27}", "\\boxed{28}"), ("\\boxed{36.0}", "\\boxed{6}")]),
    "math500": ("math500.json", _json, [
        {"problem": "Convert the point $(0,3)$ ...", "solution": "...", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
         "subject": "Precalculus", "level": 2, "unique_id": "test/precalculus/807.json"},
        {"problem": "Define p ...", "solution": "...", "answer": "p - q", "subject": "Intermediate Algebra",
         "level": 5, "unique_id": "test/intermediate_algebra/1994.json"}],
        [("\\boxed{(3, \\frac{\\pi}{2})}", "\\boxed{(3, \\pi)}"), ("\\boxed{p-q}", "\\boxed{q-p}")]),
    "gpqa_diamond": ("gpqa_diamond.csv", _csv, [
        {"Pre-Revision Question": "q", "Question": "Which particle is a lepton?", "Correct Answer": "electron",
         "Incorrect Answer 1": "proton", "Incorrect Answer 2": "neutron", "Incorrect Answer 3": "pion",
         "Explanation": "e", "Record ID": "rec1", "Subdomain": "Physics"},
        {"Pre-Revision Question": "q", "Question": "Which gas is noble?", "Correct Answer": "argon",
         "Incorrect Answer 1": "oxygen", "Incorrect Answer 2": "nitrogen", "Incorrect Answer 3": "chlorine",
         "Explanation": "e", "Record ID": "rec2", "Subdomain": "Chemistry"}],
        None),  # letters depend on the fixed shuffle: built below
    "mmlu_pro": ("test-00000-of-00001.parquet", _parquet, [
        {"question_id": 70, "question": "Which is 9?", "options": OPTIONS10, "answer": "I", "answer_index": 8,
         "cot_content": "", "category": "math", "src": "ori_mmlu"},
        {"question_id": 71, "question": "Which is 2?", "options": OPTIONS10[:4], "answer": "B", "answer_index": 1,
         "cot_content": "", "category": "math", "src": "ori_mmlu"}],
        [("\\boxed{I}", "\\boxed{H}"), ("the answer is \\boxed{(B)}", "\\boxed{D}")]),
    "demo_count": ("test.jsonl", _jsonl, [
        {"question": "Count odd: a3 b5 c2 d8", "answer": "2"}, {"question": "Count odd: a9 b9 c1 d1 e4", "answer": "4"}],
        [("\\boxed{2}", "\\boxed{1}"), ("so \\boxed{4}", "\\boxed{3}")]),
    "bbeh": ("task.json", lambda path, rows: _json(path, {"canary": "c", "examples": rows}), [
        {"input": "not ( True ) and ( True ) is", "target": "False"},
        {"input": "Sort the words: banana apple", "target": "apple banana"}],
        [("\\boxed{False}", "\\boxed{True}"), ("\\boxed{apple banana}", "\\boxed{banana apple}")]),
}


def test_every_registered_benchmark_has_a_fixture():
    assert set(FIXTURES) == set(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_loader_reads_real_format_and_grader_agrees_with_hand_labels(name, tmp_path):
    filename, write, rows, labels = FIXTURES[name]
    path = tmp_path / filename
    write(str(path), rows)
    problems = load_benchmark(name, str(path))
    assert [p.benchmark for p in problems] == [name] * len(rows)
    assert len({p.problem_id for p in problems}) == len(rows)
    bench = get_benchmark(name)
    if name == "gpqa_diamond":  # the correct option's letter after the fixed per-question shuffle
        labels = []
        for p, row in zip(problems, rows):
            letter = p.reference
            assert p.extra_info["options"]["ABCD".index(letter)] == row["Correct Answer"]
            wrong = next(x for x in "ABCD" if x != letter)
            labels.append((f"\\boxed{{{letter}}}", f"\\boxed{{{wrong}}}"))
        again = load_benchmark(name, str(path))
        assert [p.reference for p in again] == [p.reference for p in problems]  # the shuffle is fixed
    for problem, (right, wrong) in zip(problems, labels):
        if bench.answer_type == "choice":
            assert "(A)" in problem.prompt and "(B)" in problem.prompt
        assert grade_sample(problem, right) is True, (name, problem.reference, right)
        assert grade_sample(problem, wrong) is False, (name, problem.reference, wrong)


def test_a_folder_of_files_loads_all(tmp_path):
    _jsonl(str(tmp_path / "a.jsonl"), [{"question": "q1", "answer": "1"}])
    _jsonl(str(tmp_path / "b.jsonl"), [{"question": "q2", "answer": "2"}, {"question": "q3", "answer": "3"}])
    problems = load_benchmark("aime25", str(tmp_path), limit=2)
    assert [p.reference for p in problems] == ["1", "2"]


def test_file_lacking_fields_names_them(tmp_path):
    path = tmp_path / "wrong.jsonl"
    _jsonl(str(path), [{"prompt": "q", "solution": "1"}])
    with pytest.raises(BenchmarkError) as err:
        load_benchmark("aime25", str(path))
    message = str(err.value)
    assert "(question, answer) or (problem, answer)" in message and "'prompt'" in message and "'solution'" in message


def test_bad_names_and_sources_are_clear(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark 'aime26'.*aime24, aime25"):
        get_benchmark("aime26")
    with pytest.raises(BenchmarkError, match="no such file or folder"):
        load_benchmark("aime25", str(tmp_path / "absent.jsonl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BenchmarkError, match=r"expected \.json, \.jsonl, \.parquet or \.csv"):
        load_benchmark("aime25", str(tmp_path / "x.txt"))


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared benchmark files absent (a user's clone)")
@pytest.mark.parametrize("name,relpath,count", [("aime25", "AIME25", 30), ("amc23", "AMC23/amc23.json", 40),
                                                ("math500", "MATH500/math500.json", 500)])
def test_real_benchmark_files(name, relpath, count):
    problems = load_benchmark(name, os.path.join(SHARED, relpath))
    assert len(problems) == count
    for problem in problems[:3]:
        reference = problem.reference if isinstance(problem.reference, str) else str(problem.reference)
        assert grade_sample(problem, f"so the answer is \\boxed{{{reference}}}")
        assert not grade_sample(problem, "so the answer is \\boxed{123456789}")


def test_unreachable_hub_dataset_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'math-ai/aime25' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkError, match="hub dataset 'math-ai/aime25'.*give the local file or folder"):
        load_benchmark("aime25")
