"""MkDocs hook: the task guides live beside their code (``tasks/<task>/README.md``); the site
publishes them as ``tasks/<task>.md`` without a copy to keep in step."""

from pathlib import Path

from mkdocs.structure.files import File

TASKS = ("cosent", "kgclue", "triple_extraction")


def on_files(files, config):
    root = Path(config.config_file_path).parent
    for task in TASKS:
        files.append(File.generated(config, f"tasks/{task}.md",
                                    abs_src_path=str(root / "tasks" / task / "README.md")))
    return files
