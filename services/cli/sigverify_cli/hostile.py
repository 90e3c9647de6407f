"""The generator's hostile profile (``SynthSpec(hostile=True)``): data the matcher was not
designed to pass.

It keeps every rule of ``synth`` (the mix of reasons, who is valid and why, duplicates,
dates, circulators, the truth file) and changes three things.

**Names like California's roll.** Each household has an origin: Hispanic 40 %, Anglo (the
default faker names) 34 %, Chinese 6 %, Filipino 6 %, South Asian 6 %, Vietnamese 5 %,
Korean 3 %. A person has a true name (``_Voter.given``/``family``, accents kept: MARÍA JOSÉ
GARCÍA LÓPEZ) and the roll holds one registrar's form of it: accents kept for 30 % of
voters, else folded; a two-word given name (María José, Juan Carlos, John Paul) whole in
``first_name`` or split into first and middle; a compound surname as GARCÍA LÓPEZ,
GARCÍA-LÓPEZ or only GARCÍA; a Chinese or Korean given name as WEIMING, WEI MING or WEI-MING;
surnames with particles (DE LA CRUZ, DEL ROSARIO); Vietnamese middle names VAN/THI;
Filipino middles that are the mother's surname; Hispanic and Vietnamese spouses who keep
their own surname and children with both. Surnames are spelt as their communities romanise
them (LEE, LI, YI; CHEN, CHAN; ZHANG, CHANG, CHEUNG), so the roll holds many near-namesakes.
Each county also gets namesakes by the hundred (``CLUSTER_NAMES``: MARIA GARCIA, MICHAEL
NGUYEN, ...; ``CLUSTER_SHARE`` of its voters each), 40 % of them in two hot zips, 30 % of the
men's households a father and son JR/SR at one address.

**Noise.** Valid people's rows get 2.7 noise kinds on average (default 0.8), other rows 1.05
(default 0.4), drawn from the default kinds and these (the failures seen on independent data
and on FEBRL): ``number_slip`` (15S7 for 1517, 453 6SMITH for 4536 SMITH, 16720 for 16702, a
digit dropped or doubled), ``nickname_typo`` (MKIE, KN, TSEVE, JAN; Spanish nicknames too:
PEPE, CHUY, LUPE, PACO), ``typo_suffix`` (CEURT, PARWAY), ``street_joined`` (WONGPARKWAY),
``street_unit_swap`` (the unit in the street column and the street in the unit),
``typo_city``, ``first_initial``, ``first_dropped`` (only for someone living alone), and the
name forms: ``accent`` (JOSÉ for JOSE and back), ``surname_form`` (another form of a
compound surname), ``particle`` (DELA CRUZ, DELACRUZ), ``first_form`` (MARIA for MARIA JOSE,
or both words when the roll split them), ``given_spacing``, ``family_first`` (NGUYEN VAN MINH:
the family name in the first-name column). A namesake JR or SR leaves the suffix off half the
time (noise ``suffix_unwritten``): the row then fits father and son equally, the truth names
the one who signed.

**Hard negatives.** An unregistered signer is, 45 % of the time, a member of a registered
voter's household (their surname and address, a first name no member shares an initial
with), 25 % someone with one of the county's namesake names living in a zip where that name
is registered, on a street where no voter of that name lives (noise ``common_name``), and
otherwise a made-up person.

Noise never makes a row another real person's: a first name changed or shortened never
becomes a household member's, a slipped house number is never another roll address on that
street, first names are unique by first word within a household, the name of an unregistered
household member shares no initial with the household. Everything is drawn from the
generator's one ``random.Random``, so the output is deterministic for a seed.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, timedelta
from functools import lru_cache

from sigverify_cli.synth import (
    _SUFFIXES,
    HOUSEHOLD_SIZES,
    LIGHT_NOISE,
    NOISE_WEIGHTS,
    SynthSpec,
    _Address,
    _County,
    _name_equivalents,
    _Petition,
    _pick,
    _Pools,
    _Roll,
    _Row,
    _typo,
    _Voter,
    _Writer,
)

W = tuple[tuple[str, float], ...]

ORIGINS: W = (
    ("hispanic", 0.40), ("anglo", 0.34), ("chinese", 0.06), ("filipino", 0.06),
    ("south_asian", 0.06), ("vietnamese", 0.05), ("korean", 0.03),
)
ROLL_ACCENTS = 0.30              # voters whose roll entry keeps accents
COMPOUND_SHARE = 0.35            # Hispanic people with two surnames
OWN_SURNAME = {"hispanic": 0.5, "vietnamese": 0.5, "chinese": 0.4, "korean": 0.4}
SPLIT_GIVEN_SHARE = 0.30         # two-word given names the roll splits into first + middle
NAMESAKE_SHARE = 0.25            # (default 0.15) households of 3+ where a son is his father's JR
CLUSTER_SHARE = 0.0025           # of a county's voters, for each name of CLUSTER_NAMES
CLUSTER_HOT_ZIPS = 2
CLUSTER_HOT_SHARE = 0.40
CLUSTER_JUNIOR_SHARE = 0.30
CLUSTER_SIZES: tuple[tuple[int, float], ...] = ((1, 0.35), (2, 0.40), (3, 0.25))
SUFFIX_UNWRITTEN = 0.5           # namesakes who leave JR/SR off
VALID_NOISE_COUNTS = (0.04, 0.12, 0.24, 0.28, 0.20, 0.12)
OTHER_NOISE_COUNTS = (0.25, 0.45, 0.30)
UNREGISTERED_HOUSEHOLD = 0.45
UNREGISTERED_COMMON_NAME = 0.25

#: (given, family, origin, male): namesakes by the hundred in every county
CLUSTER_NAMES: tuple[tuple[str, str, str, bool], ...] = (
    ("MARÍA", "GARCÍA", "hispanic", False), ("MARÍA", "HERNÁNDEZ", "hispanic", False),
    ("MARÍA", "RODRÍGUEZ", "hispanic", False), ("MARÍA", "LÓPEZ", "hispanic", False),
    ("JOSÉ", "HERNÁNDEZ", "hispanic", True), ("JOSÉ", "GARCÍA", "hispanic", True),
    ("JUAN", "MARTÍNEZ", "hispanic", True), ("JUAN", "GARCÍA", "hispanic", True),
    ("MICHAEL", "NGUYEN", "vietnamese", True), ("JENNIFER", "NGUYEN", "vietnamese", False),
    ("DAVID", "LEE", "korean", True), ("JOHN", "SMITH", "anglo", True),
)

# --------------------------------------------------------------------------- vocabulary


def _w(text: str) -> W:
    """'NAME:weight NAME2 ...' (weight 1 when left out; '_' stands for a space)."""
    out = []
    for item in text.split():
        name, _, weight = item.partition(":")
        out.append((name.replace("_", " "), float(weight or 1)))
    return tuple(out)


HISPANIC_MALE = _w(
    "JOSÉ:8 JUAN:7 LUIS:5 CARLOS:5 JESÚS:4 MIGUEL:4 FRANCISCO:4 ANTONIO:4 JORGE:3 ALEJANDRO:3 "
    "MANUEL:3 RICARDO:2 FERNANDO:2 EDUARDO:2 ROBERTO:2 RAÚL:2 RAMÓN:2 ANDRÉS:2 SERGIO:2 "
    "JAVIER:2 DANIEL:3 DAVID:2 ÓSCAR:2 RUBÉN:2 HÉCTOR:2 MARIO:2 ARTURO:2 ENRIQUE:2 GUILLERMO:2 "
    "ALBERTO:2 PEDRO:2 ADRIÁN:2 IVÁN:1 JULIO:1 CÉSAR:2 ÁNGEL:2 VÍCTOR:2 MARTÍN:2 JOAQUÍN:1 "
    "GUSTAVO:1 SALVADOR:1 ERNESTO:1 RAFAEL:2 GERARDO:1 ARMANDO:1 JAIME:1 ALFREDO:1 IGNACIO:1 "
    "EFRAÍN:1 NICOLÁS:1 JUAN_CARLOS:3 JOSÉ_LUIS:3 JUAN_JOSÉ:1 LUIS_MIGUEL:1 JOSÉ_ANTONIO:2 "
    "MIGUEL_ÁNGEL:2 JUAN_PABLO:1 JOSÉ_MANUEL:1 JOSÉ_DE_JESÚS:1")
HISPANIC_FEMALE = _w(
    "MARÍA:9 GUADALUPE:4 ROSA:3 ANA:3 LETICIA:2 VERÓNICA:2 ALEJANDRA:2 GABRIELA:2 ADRIANA:2 "
    "CLAUDIA:2 PATRICIA:2 LAURA:2 ELIZABETH:2 SANDRA:2 MÓNICA:2 SOFÍA:2 ISABEL:2 CARMEN:2 "
    "YOLANDA:2 BEATRIZ:1 DOLORES:1 CONSUELO:1 ROCÍO:1 LUCÍA:1 ESPERANZA:1 ARACELI:1 LORENA:1 "
    "MARISOL:1 XÓCHITL:1 NOEMÍ:1 RAQUEL:1 SILVIA:1 TERESA:1 DANIELA:2 VALERIA:1 XIMENA:1 "
    "JIMENA:1 ANGÉLICA:1 MARÍA_JOSÉ:2 MARÍA_GUADALUPE:2 ANA_MARÍA:2 MARÍA_ELENA:2 "
    "MARÍA_DE_LOURDES:1 MARÍA_DEL_CARMEN:1 ROSA_MARÍA:1 MARÍA_LUISA:1 MARÍA_FERNANDA:1 "
    "ANA_LUCÍA:1 MARÍA_TERESA:1 MARÍA_ISABEL:1")
HISPANIC_SURNAMES = _w(
    "GARCÍA:10 RODRÍGUEZ:8 MARTÍNEZ:8 HERNÁNDEZ:8 LÓPEZ:7 GONZÁLEZ:7 PÉREZ:5 SÁNCHEZ:5 "
    "RAMÍREZ:5 TORRES:4 FLORES:4 RIVERA:3 GÓMEZ:3 DÍAZ:3 REYES:3 MORALES:3 CRUZ:3 ORTIZ:3 "
    "GUTIÉRREZ:3 CHÁVEZ:3 RAMOS:2 RUIZ:2 ÁLVAREZ:2 MENDOZA:2 CASTILLO:2 JIMÉNEZ:2 VÁSQUEZ:2 "
    "MORENO:2 HERRERA:2 MEDINA:2 AGUILAR:2 VARGAS:2 GUZMÁN:2 MUÑOZ:2 CASTRO:2 ROMERO:2 "
    "SALAZAR:1 NÚÑEZ:1 PEÑA:1 IBÁÑEZ:1 ACUÑA:1 ZÚÑIGA:1 ORDÓÑEZ:1 CERVANTES:1 ESPINOZA:1 "
    "VELÁZQUEZ:1 DOMÍNGUEZ:1 ROJAS:1 NAVARRO:1 CONTRERAS:1 VILLANUEVA:1 SANDOVAL:1 OCHOA:1 "
    "CAMACHO:1 VALENZUELA:1 QUIÑONES:1 DE_LA_CRUZ:1 DE_LA_TORRE:1 DEL_RÍO:0.5 DE_LEÓN:1 "
    "DE_LOS_SANTOS:0.5")
VIETNAMESE_SURNAMES = _w(
    "NGUYỄN:38 TRẦN:11 LÊ:9 PHẠM:7 HOÀNG:3 HUỲNH:5 PHAN:4 VŨ:2 VÕ:3 ĐẶNG:2 BÙI:2 ĐỖ:2 HỒ:2 "
    "NGÔ:1 DƯƠNG:1 LÝ:1 TRƯƠNG:1")
VIETNAMESE_GIVEN_M = _w(
    "MINH:3 HÙNG:2 TUẤN:2 THANH:2 QUANG:2 ĐỨC:2 KHÁNH:1 LONG:2 NAM:2 HẢI:1 HIẾU:1 TÂM:1 BẢO:2 "
    "KHOA:1 TRÍ:1 HUY:2 PHÚC:1 DŨNG:1 MICHAEL:2 DAVID:2 KEVIN:2 PETER:1 TONY:1 JOHNNY:1")
VIETNAMESE_GIVEN_F = _w(
    "ANH:2 LINH:2 HOA:2 LAN:2 MAI:2 HƯƠNG:2 PHƯƠNG:2 THU:1 TRANG:2 VY:2 THẢO:1 NGỌC:2 "
    "DIỄM:1 HẠNH:1 JENNIFER:2 TIFFANY:2 CHRISTINE:1 JULIE:1 VIVIAN:1 KIM:1")
CHINESE_SURNAMES = _w(
    "WANG:4 WONG:4 LI:4 LEE:5 ZHANG:3 CHANG:3 CHEUNG:1 LIU:3 LAU:1 CHEN:5 CHAN:3 YANG:2 "
    "YEUNG:1 HUANG:3 ZHAO:1 CHIU:1 WU:2 NG:1 ZHOU:1 CHOW:1 LIN:3 LAM:1 XU:1 HSU:1 SUN:1 MA:1 "
    "ZHU:1 CHU:1 HU:1 GUO:1 KWOK:1 HE:1 HO:1 LUO:1 LO:1 LIANG:1 LEUNG:1 ZHENG:1 CHENG:1 TANG:1 "
    "FENG:1 FUNG:1")
CHINESE_SYLLABLES = (
    "WEI", "MING", "JIAN", "HUA", "LI", "XIAO", "YU", "JUN", "HAO", "YAN", "LING", "FANG", "MEI",
    "HONG", "PING", "QIANG", "JING", "XIN", "YI", "ZHI", "CHUN", "GUANG", "KAI", "LEI", "TAO",
    "BO", "YONG", "HUI", "WEN", "JIE", "XUE", "LAN", "QING", "SHAN", "ZHEN", "KA", "WING",
    "MAN", "KWAN", "SIU",
)
KOREAN_SURNAMES = _w(
    "KIM:22 LEE:15 PARK:9 CHOI:5 JUNG:3 CHUNG:2 KANG:2 CHO:2 YOON:2 JANG:2 LIM:2 HAN:1 OH:1 "
    "SEO:1 SHIN:1 KWON:1 HWANG:1 AHN:1 SONG:1 YOO:1 HONG:1 YI:1 RHEE:1")
KOREAN_SYLLABLES = (
    "MIN", "JUN", "SEO", "YEON", "JI", "HOON", "WOO", "HYUN", "SOO", "JIN", "EUN", "YOUNG",
    "SUNG", "JAE", "HO", "HYE", "KYUNG", "SANG", "DONG", "MI", "SUN", "HEE", "JOON", "YONG",
)
ENGLISH_GIVEN_M = _w("DAVID:3 MICHAEL:3 KEVIN:2 DANIEL:2 JASON:2 ANDREW:2 ERIC:2 PETER:1 "
                     "STEVEN:1 BRIAN:1 JOHN:1 PAUL:1 JAMES:1")
ENGLISH_GIVEN_F = _w("JENNIFER:3 AMY:2 GRACE:2 CHRISTINE:2 MICHELLE:2 KAREN:1 JULIE:1 "
                     "SUSAN:1 ANGELA:1 HELEN:1 SARAH:1 EMILY:1")
FILIPINO_SURNAMES = _w(
    "SANTOS:5 REYES:5 CRUZ:4 BAUTISTA:3 GARCIA:3 MENDOZA:3 DELA_CRUZ:3 DE_LEON:2 "
    "DEL_ROSARIO:2 RAMOS:2 AQUINO:2 CASTILLO:2 VILLANUEVA:2 SORIANO:1 FERNANDEZ:1 LOPEZ:1 "
    "GONZALES:2 TOLENTINO:1 MACARAEG:1 PASCUAL:1 DIZON:1 NAVARRO:1 MANALO:1 DE_GUZMAN:2 "
    "DELOS_REYES:1 DELA_PAZ:1")
FILIPINO_GIVEN_M = _w(
    "JOSE:2 MARK:2 JOHN_PAUL:2 JERICHO:1 ARNEL:1 REYNALDO:1 ROMMEL:1 RONALDO:1 EDGARDO:1 "
    "JUN:1 RODEL:1 MICHAEL:2 CHRISTOPHER:1 RYAN:1 JOHN_MARK:1 ANTONIO:1")
FILIPINO_GIVEN_F = _w(
    "MARIA:2 MARY_GRACE:2 ROWENA:1 MARILOU:1 JOCELYN:1 MARICEL:1 CHERRY:1 MA_CRISTINA:1 "
    "JOY:1 LIEZL:1 RIZA:1 ANGELICA:1 KRISTINE:1 MARY_ANN:2 ROSALIE:1 JENNIFER:1")
SOUTH_ASIAN_SURNAMES = _w(
    "PATEL:20 SHAH:6 KUMAR:6 SHARMA:5 GUPTA:4 REDDY:4 RAO:3 KHAN:4 DESAI:2 MEHTA:2 JOSHI:2 "
    "IYER:2 NAIR:2 CHOPRA:1 MALHOTRA:1 AGARWAL:1 BHATT:1 CHAUDHARY:1 SIDHU:1 GILL:2 SANDHU:1 "
    "DHILLON:1 GREWAL:1 BAINS:1 VENKATARAMAN:1 SUBRAMANIAN:1 KRISHNAMURTHY:1 RAMASWAMY:1")
SOUTH_ASIAN_GIVEN_M = _w(
    "RAJ:2 AMIT:2 SUNIL:2 DEEPAK:2 RAHUL:2 VIKRAM:2 ARJUN:2 SANJAY:2 RAJESH:2 ANIL:2 "
    "HARPREET:2 GURPREET:2 MANPREET:1 JASPREET:1 SATNAM:1 RAVI:2 PRAKASH:1 SURESH:1 VIJAY:2 "
    "KRISHNA:1 MOHAMMED:2 IMRAN:1 VENKATESH:1")
SOUTH_ASIAN_GIVEN_F = _w(
    "PRIYA:3 ANJALI:2 POOJA:2 NEHA:2 DEEPA:1 KAVITA:2 SUNITA:2 LAKSHMI:2 MEERA:1 DIVYA:2 "
    "HARPREET:2 GURPREET:2 MANPREET:1 JASPREET:1 SIMRAN:2 AMANDEEP:1 FATIMA:1 SHREYA:1")
SIKH_GIVEN = frozenset({"HARPREET", "GURPREET", "MANPREET", "JASPREET", "SATNAM", "SIMRAN",
                        "AMANDEEP"})
VIET_MIDDLE_M = _w("VAN:11 DUC:1 MINH:1 QUOC:1 HOANG:1 THANH:1 HUU:1")
VIET_MIDDLE_F = _w("THI:12 NGOC:2 KIM:1 THU:1 MINH:1 BICH:1")
#: Spanish (and anglicised) nicknames, beyond the nicknames package's English ones.
SPANISH_NICKNAMES: dict[str, tuple[str, ...]] = {
    "JOSE": ("PEPE", "JOE"), "JESUS": ("CHUY", "JESSE"), "FRANCISCO": ("PACO", "PANCHO", "FRANK"),
    "GUADALUPE": ("LUPE", "LUPITA"), "ROBERTO": ("BETO", "ROBERT", "BOBBY"),
    "ALBERTO": ("BETO", "AL"), "EDUARDO": ("LALO", "EDDIE"), "GUILLERMO": ("MEMO", "WILLIAM"),
    "ENRIQUE": ("QUIQUE", "HENRY"), "ANTONIO": ("TOÑO", "TONY"), "IGNACIO": ("NACHO",),
    "CONSUELO": ("CHELO",), "DOLORES": ("LOLA",), "ALEJANDRO": ("ALEX",), "ALEJANDRA": ("ALEX",),
    "RICARDO": ("RICKY",), "MANUEL": ("MANNY",), "RAFAEL": ("RAFA",), "DANIEL": ("DANNY",),
    "SALVADOR": ("CHAVA",), "ROSA": ("ROSIE",), "ELIZABETH": ("LIZ", "BETTY"),
}
PARTICLES = ("DE", "DEL", "DELA", "DELOS", "LA", "LOS")
LOOKALIKE = {"0": "OoD", "1": "IlLi", "2": "Z", "3": "Bi", "4": "A", "5": "S", "6": "Gb",
             "7": "T", "8": "B", "9": "g"}
LONG_SUFFIXES = frozenset(v for v in _SUFFIXES.values() if len(v) >= 4)

#: default kinds at their weights, and the hostile ones
HOSTILE_WEIGHTS: dict[str, float] = {
    **NOISE_WEIGHTS,
    # fewer people can have these here (few middle names, Spanish first names the nicknames
    # package does not know): weighed up so that they still come at twice the default rates
    "nickname": 10, "middle_initial": 12, "middle_dropped": 15, "city_dropped": 3, "zip_digit": 1.5,
    "swap_names": 1.5, "unit_style": 4, "typo_first": 3, "case": 4,
    "accent": 3, "surname_form": 3, "particle": 2, "first_form": 3, "given_spacing": 2,
    "family_first": 2, "nickname_typo": 2, "first_initial": 1.5, "first_dropped": 0.5,
    "number_slip": 4, "typo_suffix": 2, "street_joined": 2, "street_unit_swap": 1,
    "typo_city": 2,
}
HOSTILE_LIGHT = LIGHT_NOISE | {"accent", "given_spacing", "particle", "family_first"}
_PRE = ("surname_form", "particle", "first_form", "given_spacing", "nickname_typo",
        "family_first", "accent", "number_slip")
_POST = ("first_initial", "first_dropped", "typo_suffix", "street_joined", "street_unit_swap",
         "typo_city")


@lru_cache(maxsize=1 << 18)
def fold(text: str) -> str:
    """Accents off (NGUYỄN -> NGUYEN, MUÑOZ -> MUNOZ, Đ -> D)."""
    text = text.replace("Đ", "D").replace("đ", "d")
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))


@lru_cache(maxsize=1 << 18)
def _first_word(name: str) -> str:
    return fold(name).replace("-", " ").split(" ", 1)[0]


def _is_particle_name(family: str) -> bool:
    return " " in family and family.split(" ", 1)[0] in PARTICLES


def _compound(family: str) -> bool:
    return family.count(" ") == 1 and not _is_particle_name(family)


def _spacing_forms(given: str) -> list[str]:
    a, b = given.split(" ")
    return [a + b, f"{a} {b}", f"{a}-{b}"]


def _case_like(word: str, ch: str) -> str:
    return ch.lower() if word[:1].islower() or (len(word) > 1 and word[1:2].islower()) else ch


def _typo_any(rng: random.Random, word: str) -> str:
    """One edit anywhere in the word, the first letter included (MKIE, TSEVE, KN, JAN)."""
    if len(word) < 2:
        return word
    if rng.random() < 0.25:
        i = rng.randrange(len(word) - 1)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return _typo_cased(rng, word)


def _typo_cased(rng: random.Random, word: str) -> str:
    """``synth._typo`` keeping the word's case."""
    out = _typo(rng, word.upper())
    if word.isupper():
        return out
    if word.islower():
        return out.lower()
    return out[:1] + out[1:].lower()


# --------------------------------------------------------------------------- names


class _Names:
    """Draws true names by origin and the roll's form of them."""

    def __init__(self, pools: _Pools) -> None:
        self.pools = pools
        self._cum: dict[int, tuple[list[str], list[float]]] = {}

    def _draw(self, rng: random.Random, table: W) -> str:
        key = id(table)
        if key not in self._cum:
            names = [n for n, _ in table]
            cum: list[float] = []
            total = 0.0
            for _, w in table:
                total += w
                cum.append(total)
            self._cum[key] = (names, cum)
        names, cum = self._cum[key]
        return rng.choices(names, cum_weights=cum)[0]

    def family(self, rng: random.Random, origin: str) -> str:
        if origin == "hispanic":
            first = self._draw(rng, HISPANIC_SURNAMES)
            if rng.random() < COMPOUND_SHARE and " " not in first:
                for _ in range(10):
                    second = self._draw(rng, HISPANIC_SURNAMES)
                    if second != first and " " not in second:
                        return f"{first} {second}"
            return first
        table = {"vietnamese": VIETNAMESE_SURNAMES, "chinese": CHINESE_SURNAMES,
                 "korean": KOREAN_SURNAMES, "filipino": FILIPINO_SURNAMES,
                 "south_asian": SOUTH_ASIAN_SURNAMES}.get(origin)
        return self._draw(rng, table) if table else self.pools.surname(rng)

    def given(self, rng: random.Random, origin: str, male: bool) -> str:
        if origin == "hispanic":
            return self._draw(rng, HISPANIC_MALE if male else HISPANIC_FEMALE)
        if origin == "vietnamese":
            return self._draw(rng, VIETNAMESE_GIVEN_M if male else VIETNAMESE_GIVEN_F)
        if origin in ("chinese", "korean"):
            if rng.random() < 0.4:
                return self._draw(rng, ENGLISH_GIVEN_M if male else ENGLISH_GIVEN_F)
            syl = CHINESE_SYLLABLES if origin == "chinese" else KOREAN_SYLLABLES
            a, b = rng.sample(syl, 2)
            return f"{a} {b}"
        if origin == "filipino":
            return self._draw(rng, FILIPINO_GIVEN_M if male else FILIPINO_GIVEN_F)
        if origin == "south_asian":
            return self._draw(rng, SOUTH_ASIAN_GIVEN_M if male else SOUTH_ASIAN_GIVEN_F)
        return self.pools.first(rng, male)

    def middle(self, rng: random.Random, origin: str, male: bool, given: str) -> str:
        if origin == "hispanic":
            if " " in given or rng.random() > 0.25:
                return ""
            m = self.given(rng, origin, male)
            return "" if " " in m or _first_word(m) == _first_word(given) else m
        if origin == "vietnamese":
            return "" if rng.random() < 0.2 else self._draw(
                rng, VIET_MIDDLE_M if male else VIET_MIDDLE_F)
        if origin == "filipino":
            return self._draw(rng, FILIPINO_SURNAMES) if rng.random() < 0.7 else ""
        if origin == "south_asian":
            if male and rng.random() < 0.25:
                return "KUMAR"
            return "DEVI" if not male and rng.random() < 0.15 else ""
        if origin in ("chinese", "korean"):
            return ""
        kind = _pick(rng, (("full", 0.72), ("initial", 0.10), ("none", 0.18)))
        if kind == "none":
            return ""
        m = self.pools.first(rng, male)
        return m[0] if kind == "initial" else m

    def sikh_family(self, rng: random.Random, male: bool, given: str, family: str) -> str:
        if given in SIKH_GIVEN and rng.random() < 0.6:
            return "SINGH" if male else "KAUR"
        return family

    def roll_form(self, rng: random.Random, origin: str, given: str, middle: str,
                  family: str) -> tuple[str, str, str]:
        """How the roll holds a true name: (first, middle, last)."""
        first, mid, last = given, middle, family
        if origin in ("hispanic", "filipino") and " " in given and rng.random() < SPLIT_GIVEN_SHARE:
            first, mid = given.split(" ", 1)
        elif origin in ("chinese", "korean") and given.count(" ") == 1 and "-" not in given:
            first = _pick(rng, tuple(zip(_spacing_forms(given), (0.5, 0.3, 0.2), strict=True)))
        if origin == "hispanic" and _compound(family):
            a, b = family.split(" ")
            last = _pick(rng, ((f"{a} {b}", 0.45), (f"{a}-{b}", 0.20), (a, 0.35)))
        if rng.random() >= ROLL_ACCENTS:
            first, mid, last = fold(first), fold(mid), fold(last)
        return first, mid, last


# --------------------------------------------------------------------------- roll


class HostileRoll(_Roll):
    """The roll with California's names and namesakes by the hundred."""

    def __init__(self, spec: SynthSpec, rng: random.Random, pools: _Pools) -> None:
        self.names = _Names(pools)
        #: county -> cluster name (folded first, folded last) -> zips where it is registered
        self.cluster_zips: dict[str, dict[tuple[str, str], set[str]]] = {}
        super().__init__(spec, rng, pools)

    def _person(self, county: _County, addr: _Address, hid: int, origin: str, male: bool,
                given: str, family: str, birth: date) -> _Voter:
        rng = self.rng
        middle = self.names.middle(rng, origin, male, given)
        first, mid, last = self.names.roll_form(rng, origin, given, middle, family)
        return _Voter(first, mid, last, "", birth, addr, hid, origin=origin, given=given,
                      family=family)

    def _hh(self, county: _County, size: int, origin: str,
            forced: tuple[str, str, bool] | None = None, zip_: str | None = None,
            junior: bool = False) -> None:
        rng, names = self.rng, self.names
        addr = self._address(county, zip_)
        hid = len(self.households)
        members: list[_Voter] = []
        males: list[bool] = []
        words: set[str] = set()
        if junior:
            size = max(size, 2)

        def draw_given(male: bool) -> str:
            g = names.given(rng, origin, male)
            for _ in range(30):
                if _first_word(g) not in words:
                    break
                g = names.given(rng, origin, male)
            else:
                g = names.given(rng, "anglo", male)
                while _first_word(g) in words:
                    g = names.given(rng, "anglo", male)
            words.add(_first_word(g))
            return g

        head_male = forced[2] if forced else rng.random() < 0.5
        if forced:
            head_given, head_family = forced[0], forced[1]
            words.add(_first_word(head_given))
        else:
            head_given = draw_given(head_male)
            head_family = names.family(rng, origin)
            if origin == "south_asian":
                head_family = names.sikh_family(rng, head_male, head_given, head_family)
        head_birth = self._birth(date(1927, 1, 1), date(1995, 12, 31))
        head = self._person(county, addr, hid, origin, head_male, head_given, head_family,
                            head_birth)
        members.append(head)
        males.append(head_male)
        spouse_family = head_family
        if size >= 3 or (size == 2 and not junior):
            male = not head_male if rng.random() < 0.95 else head_male
            g = draw_given(male)
            if rng.random() < OWN_SURNAME.get(origin, 0.0):
                spouse_family = names.family(rng, origin)
            off = timedelta(days=rng.randrange(-6 * 365, 6 * 365))
            members.append(self._person(county, addr, hid, origin, male, g, spouse_family,
                                        self._birth(head_birth + off, head_birth + off)))
            males.append(male)
        child_family = head_family
        if origin == "hispanic" and spouse_family != head_family:
            a, b = head_family.split(" ")[0], spouse_family.split(" ")[0]
            if a != b and " " not in head_family and not _is_particle_name(spouse_family):
                child_family = f"{a} {b}"
        n_children = size - len(members)
        for i in range(n_children):
            child_birth = head_birth + timedelta(days=rng.randrange(20 * 365, 38 * 365))
            if child_birth > self.spec.deadline - timedelta(days=19 * 365):
                child_birth = head_birth + timedelta(days=rng.randrange(-8 * 365, 8 * 365))
            birth = self._birth(child_birth, child_birth)
            if junior and i == 0 and head_male:
                son = self._person(county, addr, hid, origin, True, head_given, child_family,
                                   birth)
                son.first = head.first
                if child_family == head_family:
                    son.last = head.last
                if rng.random() < 0.5:
                    son.middle = head.middle
                son.suffix = "JR"
                if rng.random() < 0.6:
                    head.suffix = "SR"
                son.namesake = head.namesake = True
                members.append(son)
                males.append(True)
                continue
            male = rng.random() < 0.5
            members.append(self._person(county, addr, hid, origin, male, draw_given(male),
                                        child_family, birth))
            males.append(male)
        if not junior and size >= 3 and head_male and rng.random() < NAMESAKE_SHARE:
            sons = [v for v, male in zip(members[2:], males[2:], strict=True) if male]
            if sons:
                son = sons[0]
                son.first, son.given, son.suffix = head.first, head.given, "JR"
                son.middle = head.middle if rng.random() < 0.5 else son.middle
                son.family, son.last = head.family, head.last
                if rng.random() < 0.6:
                    head.suffix = "SR"
                son.namesake = head.namesake = True
        self.households.append(members)
        county.voters += members
        if forced:
            key = (_first_word(forced[0]), fold(forced[1]))
            self.cluster_zips.setdefault(county.name, {}).setdefault(key, set()).add(addr.zip)

    def _populate(self, county: _County, n: int) -> None:
        rng = self.rng
        start = len(county.voters)
        hot = rng.sample(county.zips, min(CLUSTER_HOT_ZIPS, len(county.zips)))
        per_name = max(3, round(CLUSTER_SHARE * n))
        for given, family, origin, male in CLUSTER_NAMES:
            made = 0
            while made < per_name and len(county.voters) - start < n:
                z = rng.choice(hot) if rng.random() < CLUSTER_HOT_SHARE else None
                junior = male and rng.random() < CLUSTER_JUNIOR_SHARE
                before = len(county.voters)
                self._hh(county, _pick(rng, CLUSTER_SIZES), origin, (given, family, male), z,
                         junior)
                made += sum(1 for v in county.voters[before:]
                            if _first_word(v.first) == _first_word(given))
        while len(county.voters) - start < n:
            self._hh(county, _pick(rng, HOUSEHOLD_SIZES), _pick(rng, ORIGINS))
        for _ in range(len(county.voters) - start - n):
            v = county.voters.pop()
            self.households[v.household].remove(v)


# --------------------------------------------------------------------------- noise


class HostileWriter(_Writer):
    weights: Mapping[str, float] = HOSTILE_WEIGHTS
    exclusive: tuple[frozenset[str], ...] = (
        frozenset({"typo_first", "nickname", "nickname_typo", "first_initial", "first_dropped",
                   "first_form"}),
        frozenset({"swap_names", "family_first", "first_initial", "first_dropped"}),
        frozenset({"swap_names", "family_first", "nickname", "nickname_typo"}),
        frozenset({"typo_last", "surname_form", "particle"}),
        frozenset({"middle_initial", "middle_dropped", "first_form"}),
        frozenset({"unit_style", "unit_dropped", "street_unit_swap"}),
        frozenset({"zip_digit", "city_dropped"}),
        frozenset({"city_dropped", "typo_city"}),
        frozenset({"typo_street", "street_joined"}),
    )

    def __init__(self, rng: random.Random, roll: _Roll) -> None:
        super().__init__(rng, roll)
        self._streets: dict[str, set[tuple[str, str, str, str]]] = {}

    def _applicable(self, kind: str, v: _Voter, a: _Address, first: str, middle: str,
                    suffix_written: bool) -> bool:
        if kind not in HOSTILE_WEIGHTS or kind in NOISE_WEIGHTS:
            return super()._applicable(kind, v, a, first, middle, suffix_written)
        if kind == "accent":
            return any(fold(s) != s for s in (v.given, v.family, v.first, v.last))
        if kind == "surname_form":
            return v.origin == "hispanic" and _compound(v.family)
        if kind == "particle":
            return _is_particle_name(fold(v.last).replace("-", " "))
        if kind == "first_form":
            return " " in v.given and v.origin in ("hispanic", "filipino") and not v.namesake
        if kind == "given_spacing":
            return (v.origin in ("chinese", "korean") and v.given.count(" ") == 1
                    and fold(v.first) in _spacing_forms(fold(v.given)))
        if kind == "family_first":
            return v.origin in ("vietnamese", "chinese", "korean") and not suffix_written
        if kind == "nickname_typo":
            return bool(self._nick_options(v))
        if kind == "first_initial":
            initials = {m.first[:1] for m in self._house(v) if m is not v}
            return not v.namesake and first[:1] not in initials
        if kind == "first_dropped":
            return not v.namesake and len(self._house(v)) <= 1 and bool(v.last)
        if kind == "street_unit_swap":
            return bool(a.unit)
        if kind == "typo_city":
            return any(len(w) >= 4 for w in a.city.split(" "))
        return True   # number_slip, typo_suffix, street_joined

    def _nick_options(self, v: _Voter) -> list[str]:
        base = self._nick_choices(v, v.first) if fold(v.first).isalpha() else []
        spanish = list(SPANISH_NICKNAMES.get(fold(v.first), ()))
        others = {fold(m.first) for m in self._house(v) if m is not v}
        return [n for n in dict.fromkeys(base + spanish) if fold(n) not in others]

    def _taken_numbers(self, a: _Address) -> set[tuple[str, str, str, str]]:
        if a.zip not in self._streets:
            county = self.roll.counties[a.county]
            for addr in county.addresses:
                self._streets.setdefault(addr.zip, set()).add(
                    (addr.predir, addr.name, addr.suffix, addr.number))
            self._streets.setdefault(a.zip, set())
        return self._streets[a.zip]

    def _slip(self, a: _Address) -> tuple[str, str]:
        """(new number, variant); the variant 'split' is applied after rendering."""
        rng, num = self.rng, a.number
        variant = _pick(rng, (("letter", 0.35), ("transpose", 0.25), ("split", 0.25),
                              ("drop_or_double", 0.15)))
        if variant == "split":
            return num, variant
        taken = self._taken_numbers(a)
        for _ in range(10):
            if variant == "transpose":
                pairs = [i for i in range(len(num) - 1) if num[i] != num[i + 1]]
                if not pairs:
                    variant = "letter"
                    continue
                i = rng.choice(pairs)
                out = num[:i] + num[i + 1] + num[i] + num[i + 2:]
            elif variant == "drop_or_double":
                i = rng.randrange(len(num))
                out = num[:i] + num[i + 1:] if rng.random() < 0.5 else num[:i + 1] + num[i:]
                if not out or out[0] == "0":
                    continue
            else:
                i = rng.randrange(len(num))
                return num[:i] + rng.choice(LOOKALIKE[num[i]]) + num[i + 1:], "letter"
            if (a.predir, a.name, a.suffix, out) not in taken:
                return out, variant
        i = rng.randrange(len(num))
        return num[:i] + rng.choice(LOOKALIKE[num[i]]) + num[i + 1:], "letter"

    def render(self, v: _Voter, a: _Address, kinds: Sequence[str],
               suffix_written: bool | None = None) -> tuple[dict[str, str], list[str]]:
        rng = self.rng
        first, middle, last = v.first, v.middle, v.last
        number = a.number
        applied: list[str] = []
        split = False
        for k in (k for k in _PRE if k in kinds):
            before = (first, middle, last, number)
            if k == "surname_form":
                x, y = v.family.split(" ")
                forms = [f"{x} {y}", f"{x}-{y}", x]
                accented = fold(v.last) != v.last
                if not accented:
                    forms = [fold(f) for f in forms]
                options = [f for f in forms if fold(f) != fold(last)]
                last = rng.choice(options) if options else last
            elif k == "particle":
                toks = fold(last).replace("-", " ").split(" ")
                pforms = {" ".join(toks), "".join(toks)}
                if toks[0] == "DE" and len(toks) >= 3:
                    pforms.add(toks[0] + toks[1] + " " + " ".join(toks[2:]))
                if toks[0] in ("DELA", "DELOS") and len(toks) >= 2:
                    pforms.add(toks[0][:2] + " " + toks[0][2:] + " " + " ".join(toks[1:]))
                options = sorted(f for f in pforms if f != fold(last))
                if options:
                    last = rng.choice(options)
            elif k == "first_form":
                words = first.split(" ")
                if len(words) >= 2:
                    first = words[0]
                    if rng.random() < 0.3:
                        middle = words[1][0]
                elif middle and fold(v.given).startswith(fold(first) + " "):
                    first, middle = f"{first} {middle}", ""
            elif k == "given_spacing":
                forms = _spacing_forms(fold(v.given))
                options = [f for f in forms if f != fold(first)]
                first = rng.choice(options)
            elif k == "nickname_typo":
                options = self._nick_options(v)
                others = {fold(m.first) for m in self._house(v)}
                for _ in range(10):
                    t = _typo_any(rng, rng.choice(options))
                    if fold(t) not in others and len(t) >= 2:
                        first = t
                        break
            elif k == "family_first":
                first, last = last, first
            elif k == "accent":
                first, middle, last = self._accent(v, first, middle, last)
            elif k == "number_slip":
                number, variant = self._slip(a)
                split = variant == "split" and len(number) >= 2
                if split:
                    applied.append(k)
                    continue
            if (first, middle, last, number) != before:
                applied.append(k)
        v2 = replace(v, first=first, middle=middle, last=last)
        a2 = replace(a, number=number) if number != a.number else a
        base = [k for k in kinds if k not in _PRE and k not in _POST]
        fields, done = super().render(v2, a2, base, suffix_written)
        applied += done
        if split:
            num = a2.number
            street = fields["street"]
            if street.startswith(num + " "):
                fields["street"] = f"{num[:-1]} {num[-1]}{street[len(num) + 1:]}"
            else:
                applied.remove("number_slip")
        for k in (k for k in _POST if k in kinds):
            if self._post(k, fields, v):
                applied.append(k)
        order = list(self.weights)
        return fields, sorted(applied, key=order.index)

    def _accent(self, v: _Voter, first: str, middle: str, last: str) -> tuple[str, str, str]:
        if any(fold(s) != s for s in (v.first, v.last, v.middle)):
            return fold(first), fold(middle), fold(last)
        accented: dict[str, str] = {}
        for part in (v.given, v.family):
            for tok in part.replace("-", " ").split(" "):
                accented[fold(tok)] = tok

        def restore(s: str) -> str:
            return "".join(accented.get(p, p) for p in re.split(r"([ -])", s))

        return restore(first), restore(middle), restore(last)

    def _post(self, kind: str, f: dict[str, str], v: _Voter) -> bool:
        rng = self.rng
        if kind == "first_initial":
            if not f["first_name"]:
                return False
            f["first_name"] = f["first_name"][0] + ("." if rng.random() < 0.3 else "")
        elif kind == "first_dropped":
            f["first_name"] = ""
        elif kind == "typo_suffix":
            toks = f["street"].split(" ")
            core = toks[-1].rstrip(".,")
            if fold(core).upper() not in LONG_SUFFIXES:
                return False
            toks[-1] = _typo_cased(rng, core) + toks[-1][len(core):]
            f["street"] = " ".join(toks)
        elif kind == "street_joined":
            toks = f["street"].split(" ")
            if len(toks) < 3:
                return False
            f["street"] = " ".join(toks[:-2]) + " " + toks[-2] + toks[-1]
        elif kind == "street_unit_swap":
            if not f["unit"]:
                return False
            f["street"], f["unit"] = f["unit"], f["street"]
        elif kind == "typo_city":
            words = f["city"].split(" ")
            idx = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
            if not idx:
                return False
            i = rng.choice(idx)
            words[i] = _typo_cased(rng, words[i])
            f["city"] = " ".join(words)
        return True


# --------------------------------------------------------------------------- signatures


class HostilePetition(_Petition):
    writer_cls = HostileWriter
    full_noise = tuple(HOSTILE_WEIGHTS)
    light_noise = HOSTILE_LIGHT
    valid_noise_counts = VALID_NOISE_COUNTS
    other_noise_counts = OTHER_NOISE_COUNTS
    roll: HostileRoll

    def __init__(self, spec: SynthSpec, rng: random.Random, roll: _Roll,
                 mix: Mapping[str, float]) -> None:
        self._written = False
        self._folded: set[tuple[str, str]] | None = None
        #: county -> cluster name -> streets (zip, predir, name, suffix) where it lives
        self._cluster_streets: dict[str, dict[tuple[str, str], set[tuple[str, ...]]]] = {}
        super().__init__(spec, rng, roll, mix)

    def _streets_of(self, county: _County) -> dict[tuple[str, str], set[tuple[str, ...]]]:
        if county.name not in self._cluster_streets:
            keys = set(self.roll.cluster_zips.get(county.name, {}))
            found: dict[tuple[str, str], set[tuple[str, ...]]] = {}
            for v in county.voters:
                k = (_first_word(v.first), fold(v.last))
                if k in keys:
                    a = v.addr
                    found.setdefault(k, set()).add((a.zip, a.predir, a.name, a.suffix))
            self._cluster_streets[county.name] = found
        return self._cluster_streets[county.name]

    def _suffix_written(self, v: _Voter) -> bool:
        if v.namesake:
            self._written = bool(v.suffix) and self.rng.random() >= SUFFIX_UNWRITTEN
        else:
            self._written = super()._suffix_written(v)
        return self._written

    def _person(self, row: _Row, v: _Voter, a: _Address, valid: bool) -> None:
        super()._person(row, v, a, valid)
        if v.namesake and v.suffix and not self._written:
            row.noise.append("suffix_unwritten")

    def _known(self, first: str, last: str) -> bool:
        """Whether a name (or its equivalents) is on the roll, accents aside."""
        if self._folded is None:
            self._folded = {(_first_word(f), fold(la)) for f, la in self.all_names}
        return any((_first_word(e), fold(last)) in self._folded
                   for e in _name_equivalents(fold(first)) | {first})

    def _fake(self, origin: str, male: bool, given: str, family: str, addr: _Address,
              household: int) -> _Voter:
        names, rng = self.roll.names, self.rng
        middle = names.middle(rng, origin, male, given)
        first, mid, last = names.roll_form(rng, origin, given, middle, family)
        return _Voter(first, mid, last, "", None, addr, household, origin=origin, given=given,
                      family=family)

    def _unregistered(self, row: _Row) -> None:
        rng, roll = self.rng, self.roll
        county = roll.counties[row.county]
        row.voter = None
        r = rng.random()
        if r < UNREGISTERED_HOUSEHOLD and county.voters:
            host = rng.choice(county.voters)
            house = roll.households[host.household]
            initials = {fold(m.first)[:1] for m in house} | {fold(m.middle)[:1] for m in house}
            origin = host.origin or "anglo"
            for _ in range(50):
                male = rng.random() < 0.5
                given = roll.names.given(rng, origin, male)
                if fold(given)[:1] in initials or self._known(given, host.last):
                    continue
                fake = self._fake(origin, male, given, host.family or host.last, host.addr,
                                  host.household)
                fake.last = host.last
                if self._known(fake.first, fake.last):
                    continue
                self._fake_row(row, fake, host.addr)
                row.noise.append("household")
                return
        elif r < UNREGISTERED_HOUSEHOLD + UNREGISTERED_COMMON_NAME:
            clusters = roll.cluster_zips.get(row.county, {})
            if clusters:
                given, family, origin, male = rng.choice(CLUSTER_NAMES)
                key = (_first_word(given), fold(family))
                zips = sorted(clusters.get(key, ()))
                if zips:
                    z = rng.choice(zips)
                    streets = self._streets_of(county).get(key, set())
                    for _ in range(30):
                        addr = roll._address(county, z)
                        county.addresses.pop()   # a made-up address: not a roll address
                        if (z, addr.predir, addr.name, addr.suffix) not in streets:
                            fake = self._fake(origin, male, given, family, addr, -1)
                            self._fake_row(row, fake, addr)
                            row.noise.append("common_name")
                            return
        addr = roll._address(county)
        county.addresses.pop()   # a made-up address: not a roll address
        while True:   # a name nobody on the roll has (there are many more names than voters)
            origin = _pick(rng, ORIGINS)
            male = rng.random() < 0.5
            given = roll.names.given(rng, origin, male)
            fake = self._fake(origin, male, given, roll.names.family(rng, origin), addr, -1)
            if not self._known(given, fake.family) and not self._known(fake.first, fake.last):
                break
        self._fake_row(row, fake, addr)


def namesake_counts(voters: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], int]:
    """(folded first word, folded last) -> count over (first, last, county) rows: for tests
    and reports."""
    out: dict[tuple[str, str], int] = {}
    for first, last, _ in voters:
        k = (_first_word(first), fold(last))
        out[k] = out.get(k, 0) + 1
    return out


__all__ = ["CLUSTER_NAMES", "HOSTILE_WEIGHTS", "HostilePetition", "HostileRoll",
           "HostileWriter", "fold", "namesake_counts"]
