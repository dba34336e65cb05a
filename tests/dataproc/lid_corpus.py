"""Small real multilingual text for the LID/runner tests (helper module, not a test file)."""

from __future__ import annotations

import json
from pathlib import Path

TEXTS: dict[str, list[str]] = {
    "eng_Latn": ["The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
                 "This manual page documents the command line options of the program and their defaults."],
    "deu_Latn": ["Diese Handbuchseite beschreibt die Befehlszeilenoptionen des Programms und ihre Vorgaben.",
                 "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer zusieht."],
    "fra_Latn": ["Cette page de manuel décrit les options de la ligne de commande du programme.",
                 "Le renard brun rapide saute par-dessus le chien paresseux pendant que le fermier regarde."],
    "spa_Latn": ["Esta página del manual describe las opciones de la línea de órdenes del programa.",
                 "El rápido zorro marrón salta sobre el perro perezoso mientras el granjero mira."],
    "rus_Cyrl": ["Эта страница руководства описывает параметры командной строки программы.",
                 "Быстрая коричневая лиса прыгает через ленивую собаку, пока фермер смотрит."],
    "cmn_Hans": ["这个手册页说明了程序的命令行选项以及它们的默认值，请仔细阅读。",
                 "我们来谈谈这个问题：为什么进程会在后台运行并且没有输出任何错误信息？"],
    "cmn_Hant": ["這個手冊頁說明了程式的命令列選項以及它們的預設值，請仔細閱讀。",
                 "我們來談談這個問題：為什麼進程會在後台運行並且沒有輸出任何錯誤訊息？"],
    "jpn_Jpan": ["このマニュアルページでは、プログラムのコマンドラインオプションについて説明します。",
                 "素早い茶色の狐がのろまな犬を飛び越え、農夫はそれを縁側から見ています。"],
    "srp_Cyrl": ["Ова страница упутства описује опције командне линије програма и њихове подразумеване вредности.",
                 "Брза смеђа лисица скаче преко лењог пса док сељак гледа са трема."],
}
# Rejects by construction: too short / not language (low confidence), untargeted language (Latin).
NOISE = ["", "12345 67890", "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."]


def write_corpus(root: Path, n_files: int = 6, copies: int = 2) -> Path:
    """n_files JSONL files mixing every language, the noise lines and one malformed line each."""
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        with open(root / f"part-{f:02d}.jsonl", "w", encoding="utf-8") as fh:
            for c in range(copies):
                for lang, texts in TEXTS.items():
                    for i, t in enumerate(texts):
                        fh.write(json.dumps({"text": f"{t} ({f}.{c}.{i})", "url": f"test://{lang}/{f}/{c}/{i}"},
                                            ensure_ascii=False) + "\n")
                for i, t in enumerate(NOISE):
                    fh.write(json.dumps({"text": t + (f" {f}{c}" if t else ""), "url": f"test://noise/{f}/{c}/{i}"}) + "\n")
            fh.write('{"text": "unterminated\n')
    return root
