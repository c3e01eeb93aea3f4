from leadbot.knowledge.__main__ import main


def test_build_and_ask_from_the_command_line(tmp_path, monkeypatch, capsys, settings):
    monkeypatch.setenv("KNOWLEDGE_DIR", str(settings.knowledge_dir))
    monkeypatch.setenv("KNOWLEDGE_INDEX_DIR", str(tmp_path))
    monkeypatch.delenv("KNOWLEDGE_LLM_BASE_URL", raising=False)
    assert main(["build"]) == 0
    captured = capsys.readouterr()
    assert "sections indexed in" in captured.out and "sections: 100%" in captured.err  # tqdm progress bar
    assert (tmp_path / "meta.json").is_file()

    assert main(["ask", "Kann ich per E-Mail kündigen?"]) == 0
    out = capsys.readouterr().out
    assert "(Quelle: Rechtliches – Kündigung)" in out and "reason=answered" in out
