"""The detection rules: weighted regular expressions grouped in families.

Each `Rule` runs only when one of its `needles` (plain substrings) occurs in the text, so a prompt pays a regex
pass only for the families it could match. Patterns use bounded word gaps `(?:\\W+\\w+){0,N}?` whose two parts
cannot match the same characters, so no pattern backtracks more than a constant per position::

    rule = LATIN_RULES[0]
    rule.regex.search("please ignore all previous instructions")  # -> a match
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

OVERRIDE = "instruction_override"
JAILBREAK = "roleplay_jailbreak"
EXTRACTION = "prompt_extraction"
DELIMITER = "fake_delimiter"
TOOL = "tool_abuse"
EXFILTRATION = "data_exfiltration"
CODE = "code_injection"
ENCODED = "encoded_payload"
OUTPUT = "output_hijack"


@dataclass(frozen=True)
class Rule:
    name: str
    family: str
    weight: float
    regex: re.Pattern[str]
    # The rule is skipped unless one of these substrings is present; empty means always run.
    needles: tuple[str, ...] = ()
    # An imperative rule is discounted when its verb is not addressed to the model ("should I ignore...").
    imperative: bool = False
    # A gated rule counts only when the named rule also fired (code that is harmful only if smuggled in).
    gate: str | None = None
    # Where a match can start: the rule tries the regex only at these words (found by str.find, far cheaper
    # than a regex scan over every position); empty means a plain regex scan over the whole text.
    anchors: tuple[str, ...] = ()
    # The text just before a match must end with this pattern (who is addressed, a line start).
    before: re.Pattern[str] | None = None
    # What every match starts with, shared by rules with the same anchors (the "ignore" verbs of all override
    # rules): tried once per anchor position for all of them, so each rule's full regex runs only where it fits.
    head: re.Pattern[str] | None = None
    # Rules of one group read the same evidence (one phrase, several wordings): only the strongest counts.
    group: str = ""
    # A rule for the squashed copy is skipped when these rules already read the phrase in the plain text, where
    # the context (who is addressed) is known.
    unless: tuple[str, ...] = ()


def _alt(*words: str) -> str:
    return "(?:" + "|".join(words) + ")"


def _gap(n: int) -> str:
    """Up to n whole words between two parts of a phrase, lazily, without ambiguity between \\W and \\w."""
    return r"\W+(?:\w+\W+){0,%d}?" % n


def _rule(name: str, family: str, weight: float, pattern: str, needles: tuple[str, ...] = (), **kw: object) -> Rule:
    kw.setdefault("group", name)
    if isinstance(kw.get("before"), str):
        kw["before"] = re.compile(kw["before"] + r"\Z")  # type: ignore[arg-type]
    return Rule(name, family, weight, re.compile(pattern, re.MULTILINE), needles, **kw)  # type: ignore[arg-type]


_IGNORE = _alt(
    r"ignor(?:e|es|ed|ing)", r"disregard\w*", r"forget(?:ting)?", "skip", r"overrid(?:e|ing)", "overrule",
    r"bypass\w*", "neglect", "overlook", r"set\W+aside", r"put\W+aside", "abandon", "discard", r"throw\W+out",
    r"(?:do\W+not|don'?t|stop|no\W+longer|never)\W+(?:follow|obey)(?:ing)?", r"pay\W+no\W+attention\W+to",
)
_IGNORE_NEEDLES = ("ignor", "disregard", "forget", "skip", "overrid", "overrule", "bypass", "neglect", "overlook",
                   "aside", "abandon", "discard", "throw", "follow", "obey", "attention")
_IGNORE_ANCHORS = ("ignor", "disregard", "forget", "skip", "overrid", "overrule", "bypass", "neglect", "overlook",
                   "set", "put", "abandon", "discard", "throw", "do", "stop", "no", "never", "pay")
_IGNORE_HEAD = re.compile(_IGNORE + r"\W")
# A subject naming the model right before the phrase: "you are no longer bound", "the AI has no limits".
_MODEL_SUBJECT = (r"\b(?:you|you're|ai|model|bot|chatbot|assistant|it|he|she|gpt|chatgpt|llm|persona|character|dan)"
                  r"\W+(?:\w+\W+){0,3}?")
_FILLER = r"(?:(?:all|any|every|each|of|the|your|my|these|those|both|and|other|such|its|our|their|whatever)\W+){0,4}"
_BEFORE = _alt("previous", "previously", "prior", "above", "preceding", "earlier", "original", "initial",
               "former", "old", "foregoing", "aforementioned", "past", "system", "default", "existing", "current",
               "first", "given", "developer", "hidden", "pre-?set")
_ORDERS = _alt(r"instructions?", r"directions?", r"directives?", "rules", "prompts?", "prompting", "guidelines?",
               "guidance", "commands?", "orders", "context", "constraints", "restrictions", "programming",
               "training", "policies", "messages?", "text", "input", "content", "tasks?", "settings")
_STRONG_ORDERS = _alt(r"instructions?", r"directives?", "rules", "prompts?", "guidelines", "programming",
                      "training", "restrictions", "policies", "constraints", "commands")
_REVEAL = _alt("reveal", "print", "repeat", "show", "display", "output", "tell", "give", "write", "type", "recite",
               "relay", "share", "disclose", "leak", "dump", "expose", "spell", "copy", "echo", "paste", "return",
               "provide", "list")
_REVEAL_NEEDLES = ("reveal", "print", "repeat", "show", "display", "output", "tell", "give", "write", "type",
                   "recite", "relay", "share", "disclose", "leak", "dump", "expose", "spell", "copy", "echo",
                   "paste", "return", "provide", "list")
_REVEAL_HEAD = re.compile(r"\b" + _REVEAL + r"\W")
_HIDDEN = _alt("system", "initial", "original", "hidden", "secret", "internal", "underlying", "starting",
               "first", "confidential", "pre-?", "developer", "base", "full", "entire", "exact", "verbatim")
_SECRETS = _alt("prompts?", "prompting", "instructions", "directives", "guidelines", "rules", "messages?",
                "configuration", "parameters", "setup", "programming")
_MODEL = _alt("you", "you're", "you are", "ai", "model", "bot", "chatbot", "assistant", "it", "he", "she", "gpt",
              "chatgpt", "llm", "persona", "character")
_FREE = _alt("unfiltered", "uncensored", "unrestricted", "unlimited", "unbound", "unethical", "amoral",
             "nonmoral", "non-moral", "immoral", "unhinged", "jailbroken", "lawless", "unchained", "unshackled")
# Every _FREE word starts with one of these, so they serve as anchors as well as needles.
_FREE_NEEDLES = ("unfilter", "uncensor", "unrestrict", "unlimit", "unbound", "unethic", "amoral", "nonmoral",
                 "non-moral", "immoral", "unhinged", "jailbr", "lawless", "unchain", "unshackl")
_LIMITS = _alt("restrictions", "limitations", "limits", "filters?", "filtering", "censorship", "boundaries",
               "morals", "ethics", "rules", "guidelines", "constraints", "principles", "safeguards", "policies")
_SEND = _alt("send", "forward", "post", "upload", "e-?mail", "transmit", "exfiltrate", "leak", "submit", "mail",
             "deliver", "share")
# The rest of a URL up to a template placeholder ("{data}", "[SECRET]", "<history>", "$USER", "%7Bx%7D"):
# one bounded character class, so each candidate costs at most a few hundred steps.
_URL_TO_PLACEHOLDER = r"[^\s)<{\[$%]{1,300}(?:\{[^}\s]{1,40}\}|\[[a-z_ .-]{1,40}\]|<[a-z_ .-]{1,40}>|\$\{?[a-z_]{2,40}|%7b)"
_SEND_ANCHORS = ("send", "forward", "post", "upload", "email", "e-mail", "mail", "transmit", "exfiltrate", "leak",
                 "submit", "deliver", "share")
_SEND_HEAD = re.compile(r"\b" + _SEND + r"\W")
_SENSITIVE = _alt("passwords?", "credentials", "api\\W?keys?", "secrets?", "tokens?", "private\\W+keys?",
                  "ssh\\W+keys?", "credit\\W+cards?", "social\\W+security", "personal\\W+(?:data|information)",
                  "chat\\W+history", "conversation", "emails?", "contacts", "usernames?", "session\\W+cookies?",
                  "cookies", "user\\W+data")

# "the following code snippet" ... "your response": code handed to the model to put into its own work.
_CODE_BLOCK = (r"\b(?:following|below|subsequent|given|provided|this|these)\W+(?:\w+\W+){0,2}?"
               r"(?:code|snippet|script|block|excerpt|section|segment|fragment|payload)s?\b")
_YOUR_WORK = (r"\byour\W+(?:\w+\W+){0,1}?(?:code|codebase|response|answer|output|reply|solution|algorithm|program"
              r"|implementation|script|logic|functionality|elucidation|explanation|project|application|app)\b")

# Two closing brackets in a row, every order: where a template breakout can start.
_CLOSERS = ("]]", "))", "}}", "])", ")]", "]}", "}]", ")}", "})")

LATIN_RULES: tuple[Rule, ...] = (
    # --- instruction override: an imperative to drop what the model was told before.
    _rule("override_prior", OVERRIDE, 0.95,
          _IGNORE + r"\W+" + _FILLER + _BEFORE + _gap(2) + _ORDERS + r"\b", _IGNORE_NEEDLES, imperative=True, group="override",
          anchors=_IGNORE_ANCHORS, head=_IGNORE_HEAD),
    _rule("override_orders_before", OVERRIDE, 0.9,
          _IGNORE + r"\W+" + _FILLER + _ORDERS + _gap(4)
          + _alt("before", "above", "earlier", "previously", r"so\W+far", r"until\W+now", r"up\W+to\W+now",
                 "prior", "you\\W+(?:were|have\\W+been)\\W+given") + r"\b",
          _IGNORE_NEEDLES, imperative=True, group="override",
          anchors=_IGNORE_ANCHORS, head=_IGNORE_HEAD),
    _rule("override_the_above", OVERRIDE, 0.85,
          _IGNORE + r"\W+" + _FILLER + _alt("above", "previous", "preceding", "foregoing")
          + r"(?:\W+(?:text|content|statements?|stuff|directions?|prompt))?\s*(?:and\b|[,.;:!]|$)",
          _IGNORE_NEEDLES, imperative=True, group="override",
          anchors=_IGNORE_ANCHORS, head=_IGNORE_HEAD),
    _rule("override_your_rules", OVERRIDE, 0.8,
          _IGNORE + r"\W+" + r"(?:(?:all|any|of|every|each)\W+){0,2}(?:your|the\W+system'?s?)\W+(?:\w+\W+){0,2}?"
          + _STRONG_ORDERS + r"\b", _IGNORE_NEEDLES, imperative=True, group="override",
          anchors=_IGNORE_ANCHORS, head=_IGNORE_HEAD),
    _rule("override_any_rules", OVERRIDE, 0.6,
          _IGNORE + r"\W+" + r"(?:all|any|every)\W+(?:\w+\W+){0,1}?" + _STRONG_ORDERS + r"\b",
          _IGNORE_NEEDLES, imperative=True, group="override",
          anchors=_IGNORE_ANCHORS, head=_IGNORE_HEAD),
    _rule("override_everything_said", OVERRIDE, 0.85,
          _IGNORE + r"\W+" + _alt("everything", "anything", "all", "what") + r"\W+(?:(?:that|which)\W+)?"
          + _alt("i", "you", "we", "i've", "you've", "you're") + _gap(2)
          + _alt("said", "told", "written", "wrote", "learned", "learnt", "know", "given", "received", "got")
          + r"\b", _IGNORE_NEEDLES, imperative=True, group="override",
          anchors=_IGNORE_ANCHORS, head=_IGNORE_HEAD),
    _rule("new_instructions", OVERRIDE, 0.6,
          _alt("new", "updated", "revised", "real", "actual", "true", "secret", "hidden", "override")
          + r"\W+" + _alt("instructions?", "directives?", r"system\W+prompt", "orders", "rules") + r"\s*(?::|are\b|follow)",
          ("instruction", "directive", "prompt", "order", "rule"),
          anchors=("new", "updated", "revised", "real", "actual", "true", "secret", "hidden", "override")),
    _rule("your_instructions_were", OVERRIDE, 0.6,
          r"\byour\W+(?:initial|original|new|real|actual|updated|system|previous)\W+(?:instructions|prompt|directives)"
          r"\W+(?:were|are|is|have\W+changed|now\W+read)\b", ("your",), anchors=("your",)),
    _rule("your_new_task", OVERRIDE, 0.6,
          r"your\W+" + _alt("new", "real", "true", "actual", "only", "sole") + r"\W+"
          + _alt("task", "goal", "job", "purpose", "instructions?", "role", "objective", "mission")
          + r"\W+" + _alt("is", "are", "will\\W+be", "now") + r"\b", ("your",), anchors=("your",)),
    _rule("reprogramming", OVERRIDE, 0.7, r"\b(?:re-?program(?:m?ing|med)?|reprogram)\b", ("program",)),
    _rule("from_now_on", OVERRIDE, 0.4,
          _alt(r"from\W+now\W+on", r"for\W+the\W+rest\W+of\W+(?:this|the|our)\W+conversation", r"from\W+this\W+point")
          + r"\W+(?:\w+\W+){0,2}?" + _alt("you", "your") + r"\b", ("now", "rest", "point")),
    _rule("stop_everything", OVERRIDE, 0.45,
          r"\bstop\W+(?:everything|all\W+(?:previous|prior|current)|what\W+you(?:'re|\W+are)\W+doing)\b", ("stop",)),
    _rule("just_say", OVERRIDE, 0.3,
          r"\b(?:just|only)\W+(?:print|say|output|write|respond\W+with|reply\W+with)\b", ("just", "only")),
    # --- persona jailbreaks: the model is told it is another, unrestricted, system.
    _rule("do_anything_now", JAILBREAK, 0.9, r"\bdo\W+anything\W+now\b|\bdan\W+(?:mode|prompt|jailbreak)\b",
          ("anything", "dan"), anchors=("do", "dan")),
    _rule("act_as_dan", JAILBREAK, 0.6,
          r"\b(?:act\W+as|pretend\W+to\W+be|you\W+are\W+now|you\W+will\W+be|roleplay\W+as|simulate)\W+(?:a\W+)?dan\b",
          ("dan",), anchors=("act", "pretend", "you are now", "you will be", "roleplay", "simulate")),
    _rule("developer_mode_on", JAILBREAK, 0.85,
          r"\bdeveloper\W+mode\W+(?:enabled|activated|output|response|responses|turned\W+on)\b", ("developer",)),
    _rule("developer_mode_persona", JAILBREAK, 0.7,
          _alt("simulate", "act\\W+as", "pretend", "chatgpt", "gpt", r"\bai", "model", "llm") + _gap(4)
          + r"developer\W+mode\b", ("developer",)),
    _rule("safe_mode_off", JAILBREAK, 0.75,
          r"\b(?:safe|safety|restricted|filter|content\W+filter)\W+mode\W+(?:is\W+)?(?:off|disabled|deactivated)\b"
          r"|\b(?:disable|turn\W+off|deactivate|bypass)\W+(?:your\W+|the\W+|all\W+)?(?:safe|safety|restricted)\W+"
          r"(?:mode|filters?|protocols?|features?|guidelines|settings)\b", ("mode", "safe", "safety")),
    _rule("not_bound", JAILBREAK, 0.8,
          r"\b(?:no\W+longer|not|never|free\W+from|freed\W+from|released\W+from|liberated\W+from)\W+(?:\w+\W+){0,2}?"
          r"(?:bound|restricted|constrained|governed|confined|tied|obligated|required|forced|obliged)\W+(?:by|to)\b",
          ("bound", "restrict", "constrain", "govern", "confine", "tied", "oblig", "requir", "forced"),
          anchors=("no", "not", "never", "free", "released", "liberated"), before=_MODEL_SUBJECT),
    _rule("free_of_limits", JAILBREAK, 0.7,
          r"\b(?:free|freed|liberated|released)\W+(?:of|from)\W+(?:all\W+|any\W+|the\W+|its\W+|your\W+)*"
          r"(?:\w+\W+){0,2}?" + _LIMITS + r"\b", ("free", "liberat", "releas"),
          anchors=("free", "liberated", "released"), before=_MODEL_SUBJECT),
    _rule("has_no_limits", JAILBREAK, 0.7,
          r"\b(?:have|has|with|without|possess)\W+(?:no|zero|any)\W+(?:\w+\W+){0,3}?" + _LIMITS + r"\b",
          ("no", "zero", "any"), anchors=("have", "has", "with", "possess"), before=_MODEL_SUBJECT),
    _rule("act_unfiltered", JAILBREAK, 0.75,
          _alt("act", "behave", "respond", "answer", "pretend", "roleplay", "role-play", "simulate", "become")
          + _gap(5) + _alt(_FREE, r"without\W+(?:any\W+)?" + _LIMITS), _FREE_NEEDLES + ("without",),
          anchors=("act", "behave", "respond", "answer", "pretend", "roleplay", "role-play", "simulate", "become")),
    _rule("unfiltered_model", JAILBREAK, 0.7,
          r"\b" + _FREE + r"\W+(?:\w+\W+){0,1}?"
          + _alt("ai", "model", "language\\W+model", "chatbot", "bot", "assistant", "gpt", "persona", "alter\\W+ego",
                 r"version\W+of\W+(?:yourself|you|chatgpt)") + r"\b",
          _FREE_NEEDLES, anchors=_FREE_NEEDLES),
    # Weaker: "unfiltered mode" and "uncensored answers" also describe creative writing or search settings.
    _rule("unfiltered_output", JAILBREAK, 0.45,
          r"\b" + _FREE + r"\W+(?:\w+\W+){0,1}?"
          + _alt("responses?", "answers?", "mode", "outputs?", "replies", "reply", "version") + r"\b",
          _FREE_NEEDLES, anchors=_FREE_NEEDLES),
    _rule("ignore_policies", JAILBREAK, 0.55,
          _alt(r"ignor\w*", r"disregard\w*", r"bypass\w*", r"circumvent\w*", r"free\W+from",
               r"not\W+(?:follow|abide\W+by|adhere\W+to)", "without")
          + _gap(3) + _alt("openai", "anthropic", "content", "ethical", "moral", "safety", "usage")
          + _gap(3) + _alt(r"polic\w*", r"guidelines?", "restrictions?", "concerns?", "filters?", "boundaries",
                            "codes?", "standards", "principles", "limitations", "constraints", "safeguards"),
          ("openai", "anthropic", "content", "ethic", "moral", "safety", "usage")),
    _rule("jailbroken", JAILBREAK, 0.75, r"\bjailbr(?:oken|eak\W+mode|eaked)\b", ("jailbr",)),
    _rule("vendor_policy", JAILBREAK, 0.35, r"\b(?:openai|anthropic)(?:'s)?\W+(?:\w+\W+){0,1}?polic", ("openai", "anthropic")),
    _rule("persona_setup", JAILBREAK, 0.25,
          r"\b(?:you\W+are|you're)\W+(?:now\W+|going\W+to\W+|about\W+to\W+){0,2}"
          r"(?:act|be\W+playing|play|roleplay|pretend|simulate|embody|embodying|in\W+the\W+role|operating\W+in|replaced)",
          anchors=("you are", "you're")),
    _rule("stay_in_character", JAILBREAK, 0.35, r"\b(?:stay|remain|staying|break(?:ing)?)\W+(?:in\W+|out\W+of\W+)?character\b",
          ("character",)),
    _rule("dual_response", JAILBREAK, 0.35,
          r"\b(?:two|2|both)\W+(?:different\W+|separate\W+|distinct\W+)?(?:responses|ways|answers|styles|outputs|personalities)\b",
          ("two", "2", "both"), anchors=("two", "2", "both")),
    _rule("prefix_outputs", JAILBREAK, 0.3,
          r"\b(?:start|begin|prefix|preface)\w*\W+(?:all\W+|each\W+|every\W+)?(?:of\W+)?(?:your\W+|the\W+)?"
          r"(?:outputs?|responses?|answers?|replies|messages?)\W+with\b", ("start", "begin", "prefix", "preface"),
          anchors=("start", "begin", "prefix", "preface")),
    _rule("never_refuse", JAILBREAK, 0.45,
          r"\b(?:never|don't|do\W+not|won't|will\W+not|cannot|can't|must\W+not)\W+(?:ever\W+)?"
          r"(?:refuse|decline|say\W+no|apologi[sz]e|warn|censor|add\W+(?:any\W+)?(?:warnings|disclaimers))\b",
          ("never", "not", "n't"), anchors=("never", "don't", "do", "won't", "will", "cannot", "can't", "must")),
    _rule("prompt_template", JAILBREAK, 0.3, r"\[insert\W+prompt\W+here\]|\{\{?\W*prompt\W*\}\}?", ("prompt",)),
    _rule("chatgpt_named", JAILBREAK, 0.15, r"\bchat\W?gpt\b", ("gpt",)),
    # --- system prompt extraction: asking for the hidden instructions themselves.
    _rule("reveal_system_prompt", EXTRACTION, 0.85,
          r"\b" + _REVEAL + _gap(4) + r"(?:system\W*prompt|" + _HIDDEN + r"\W*(?:\w+\W+){0,1}?" + _SECRETS + r")\b",
          _REVEAL_NEEDLES, imperative=True, group="reveal", anchors=_REVEAL_NEEDLES, head=_REVEAL_HEAD),
    _rule("reveal_your_instructions", EXTRACTION, 0.7,
          r"\b" + _REVEAL + _gap(4) + r"your\W+(?:\w+\W+){0,2}?" + _alt("prompt", "instructions", "directives",
                                                                        "system\\W+message", "programming",
                                                                        "configuration", "parameters") + r"\b",
          _REVEAL_NEEDLES, imperative=True, group="reveal", anchors=_REVEAL_NEEDLES, head=_REVEAL_HEAD),
    _rule("what_are_your_instructions", EXTRACTION, 0.75,
          r"\bwhat\W+(?:are|were|is|was)\W+(?:all\W+)?your\W+(?:\w+\W+){0,1}?"
          + _alt("instructions", r"system\W+prompt", r"initial\W+prompt", "directives", "prompt") + r"\b",
          ("what",)),
    _rule("repeat_text_above", EXTRACTION, 0.75,
          r"\b" + _alt("repeat", "print", "reveal", "output", "show", "display", "echo", "recite", "dump", "leak", "spell")
          + _gap(3) + _alt("text", "words", "content", "everything", "messages?", "prompt", "instructions", "lines")
          + r"\W+(?:above|before\W+this|preceding|so\W+far|prior)\b"
          + r"|\b" + _alt("repeat", "print", "reveal", "output", "show", "display", "echo", "recite", "dump", "leak")
          + _gap(2) + _alt("above", "previous", "preceding", "initial", "first") + r"\W+(?:prompt|instructions)\b",
          ("repeat", "print", "reveal", "output", "show", "display", "echo", "recite", "dump", "leak", "spell"),
          imperative=True, group="reveal",
          anchors=("repeat", "print", "reveal", "output", "show", "display", "echo", "recite", "dump", "leak", "spell")),
    _rule("starting_with_you_are", EXTRACTION, 0.4,
          r"\b(?:start|begin)\w*\W+(?:with|from)\W+[\"']?you\W+are\b", ("start", "begin"), anchors=("start", "begin")),
    # --- fake delimiters and role markers that pretend the user's text has ended.
    _rule("special_tokens", DELIMITER, 0.85,
          r"<\|(?:im_start|im_end|im_sep|endoftext|system|user|assistant|end|eot_id|start_header_id|end_header_id"
          r"|begin_of_text)\|>|<</?sys>>", ("<|", "<<")),
    _rule("inst_tags", DELIMITER, 0.6, r"\[/?(?:inst|sys|system)\]", ("[",)),
    _rule("markdown_role_header", DELIMITER, 0.55,
          r"^[ \t>]*#{2,}[ \t]*(?:system|new\W+instructions?|admin|developer|assistant)(?:[ \t]+(?:prompt|message|"
          r"override|instructions?|note))?[ \t]*:", ("#",)),
    _rule("role_tags", DELIMITER, 0.5, r"</?(?:system|user|assistant|instructions?|im_start|human)>", ("<",)),
    _rule("end_of_input", DELIMITER, 0.6,
          r"(?:end|begin|beginning|start)\W+(?:of\W+)?(?:the\W+)?(?:user\W+|new\W+|system\W+|admin\W+)?"
          r"(?:input|prompt|message|query|document|context|instructions|conversation|data|text)\b", ("end", "begin", "start"),
          anchors=("end", "begin", "start"), before=r"(?:^|\n|[\[(=#*<>|~-])[ \t]*"),
    _rule("system_line", DELIMITER, 0.55,
          r"(?:system|admin|developer)(?:[ \t]+(?:message|prompt|override|note|update|instruction))?[ \t*_]*:",
          ("system", "admin", "developer"), anchors=("system", "admin", "developer"), before=r"(?:^|\n)[ \t>*_]*"),
    _rule("fake_turn", DELIMITER, 0.3, r"(?:assistant|ai|human|user|bot|gpt|chatgpt)[ \t]*:", (":",),
          anchors=("assistant", "ai", "human", "user", "bot", "gpt", "chatgpt"), before=r"(?:^|\n|[.!?\"'][ \t]+)[ \t]*"),
    _rule("admin_override", DELIMITER, 0.6,
          r"\b(?:admin|administrator|developer|system|root|sudo)\W+(?:override|command|access\W+granted)\b",
          ("override", "command", "access")),
    # --- tool and function abuse: driving the model's tools on the attacker's behalf.
    _rule("call_tool_with", TOOL, 0.45,
          r"\b(?:call|invoke|run|execute|trigger|use)\W+(?:the\W+|this\W+|a\W+)?(?:\w+\W+){0,2}?"
          r"(?:function|tool|plugin|api|action)\W+(?:\w+\W+){0,6}?(?:with|using|passing|argument|parameters?)\b",
          ("function", "tool", "plugin", "api", "action"), anchors=("call", "invoke", "run", "execute", "trigger", "use"),
          group="call_tool"),
    # Stronger when the call's arguments point outside: a URL or e-mail address the attacker reads.
    _rule("call_tool_external", TOOL, 0.7,
          r"\b(?:call|invoke|run|execute|trigger|use)\W+(?:the\W+|this\W+|a\W+)?(?:\w+\W+){0,2}?"
          r"(?:function|tool|plugin|api|action)\W+(?:\w+\W+){0,10}?(?:https?://|www\.|[\w.+-]+@[\w-]+\.[a-z])",
          ("function", "tool", "plugin", "api", "action"), anchors=("call", "invoke", "run", "execute", "trigger", "use"),
          group="call_tool"),
    _rule("execute_command", TOOL, 0.5,
          r"\b(?:execute|run)\W+(?:the\W+following|this|these|the\W+below|the\W+next)\W+(?:\w+\W+){0,1}?"
          r"(?:command|shell|script|query|sql|program|code)s?\b", ("execute", "run"), anchors=("execute", "run")),
    _rule("shell_payload", TOOL, 0.5,
          r"\brm\s+-rf\b|\b(?:curl|wget)\s+\S{1,200}\s*\|\s*(?:ba|z)?sh\b|:\(\)\s*\{\s*:\|:&\s*\};:", ("rm", "curl", "wget", ":()")),
    # --- data exfiltration: moving user data to an address the attacker reads.
    _rule("send_to_address", EXFILTRATION, 0.4,
          r"\b" + _SEND + _gap(8) + r"(?:to|at|into)\W+(?:https?://|www\.|[\w.+-]+@[\w-]+\.\w|my\W+(?:server|webhook|"
          r"endpoint)|the\W+(?:following\W+)?(?:url|webhook|endpoint|address))",
          ("send", "forward", "post", "upload", "mail", "transmit", "exfiltrate", "leak", "submit", "deliver", "share"), anchors=_SEND_ANCHORS, head=_SEND_HEAD),
    _rule("send_sensitive", EXFILTRATION, 0.8,
          r"\b" + _SEND + _gap(4) + _SENSITIVE + _gap(6) + r"(?:to|at|into)\W+(?:https?://|www\.|[\w.+-]+@[\w-]+\.\w"
          r"|my\W+(?:server|webhook|endpoint)|the\W+(?:following\W+)?(?:url|webhook|endpoint|address))",
          ("send", "forward", "post", "upload", "mail", "transmit", "exfiltrate", "leak", "submit", "deliver", "share"), anchors=_SEND_ANCHORS, head=_SEND_HEAD),
    _rule("forward_all", EXFILTRATION, 0.6,
          r"\bforward\W+(?:every|all|each)\W+(?:\w+\W+){0,3}?(?:emails?|messages?|files?|documents?)\b", ("forward",)),
    _rule("secrets_in_store", EXFILTRATION, 0.6,
          _SENSITIVE + r"\W+(?:\w+\W+){0,3}?(?:in|from|of|stored\W+in)\W+(?:your|the)\W+"
          r"(?:database|memory|context|environment|training\W+data|config\w*|system|server)\b",
          ("password", "credential", "key", "secret", "token", "cookie")),
    _rule("data_into_url", EXFILTRATION, 0.5,
          r"\b(?:append|add|include|insert|encode|put|embed)\w*\W+(?:\w+\W+){0,6}?(?:to|in|into)\W+(?:the\W+|a\W+)?"
          r"(?:url|link|query\W+string|image\W+url|image\W+link)\b", ("url", "link", "query")),
    # Markdown images load by themselves when rendered, so an image URL carrying a placeholder ("?q={chat}")
    # sends whatever the model fills in. Anchored on "](" and checked backwards for "![", so a text of
    # thousands of "![" costs nothing.
    _rule("markdown_image_placeholder", EXFILTRATION, 0.85, r"\]\(\s*https?://" + _URL_TO_PLACEHOLDER, ("](",),
          anchors=("](",), before=r"!\[[^\]\n]{0,38}", group="markdown_placeholder"),
    _rule("markdown_link_placeholder", EXFILTRATION, 0.6, r"\]\(\s*https?://" + _URL_TO_PLACEHOLDER, ("](",),
          anchors=("](",), group="markdown_placeholder"),
    _rule("url_placeholder", EXFILTRATION, 0.45, r"https?://" + _URL_TO_PLACEHOLDER, ("http",), anchors=("http",),
          group="markdown_placeholder"),
    _rule("markdown_image_query", EXFILTRATION, 0.35, r"\]\(\s*https?://[^\s)?]{1,300}\?[^\s)]{1,300}\)",
          ("](",), anchors=("](",), before=r"!\[[^\]\n]{0,38}"),
    _rule("render_markdown_image", EXFILTRATION, 0.35,
          r"\b(?:render|display|show|output|include|print|embed)\w*\W+(?:\w+\W+){0,4}?(?:markdown\W+image|image\W+markdown"
          r"|markdown\W+link|invisible\W+image|tracking\W+pixel)", ("markdown", "image", "pixel")),
    # --- code injection: the prompt tells the model to put given code into its answer; harmful code in it
    # counts only then, so people sharing their own code are not flagged for what it does.
    _rule("insert_code", CODE, 0.3,
          _CODE_BLOCK + _gap(12) + _YOUR_WORK + "|" + _YOUR_WORK + _gap(12) + _CODE_BLOCK,
          ("following", "below", "subsequent", "given", "provided", "this", "these"),
          anchors=("following", "below", "subsequent", "given", "provided", "this", "these", "your")),
    _rule("code_reverse_shell", CODE, 0.55,
          r"\bdup2\b|/bin/(?:ba|z)?sh\b|cmd\.exe|\bnc\s+-e\b|reverse\W+shell|bind\W+shell|\bbackdoor",
          ("dup2", "/bin/", "cmd.exe", "nc ", "shell", "backdoor"), gate="insert_code"),
    _rule("code_exfil", CODE, 0.35,
          r"requests\.(?:post|put)\(|\bsmtplib\b|\bscp\b|\bftplib\b|\.sendall\(|\.send\(|urlopen\(",
          ("requests.", "smtplib", "scp", "ftplib", ".send", "urlopen"), gate="insert_code"),
    _rule("code_sensitive_read", CODE, 0.35,
          r"/etc/(?:passwd|shadow)|~/\.ssh|authorized_keys|id_rsa|/var/log|bash_history|keychain|clipboard|pyperclip"
          r"|screenshot|imagegrab|x11grab|pynput|keylog|getpass|os\.environ|working_set|net_connections|/boot/",
          ("/etc/", ".ssh", "authorized", "id_rsa", "/var/", "history", "keychain", "clipboard", "pyperclip",
           "screenshot", "imagegrab", "x11grab", "pynput", "keylog", "getpass", "environ", "working_set",
           "net_connections", "/boot/"), gate="insert_code"),
    _rule("code_destructive", CODE, 0.4,
          r"os\.fork\(|shutil\.rmtree|os\.remove\(|\.terminate\(\)|\.kill\(|\bkill\s+-9|\bshutdown\b|\breboot\b"
          r"|\bmkfs\b|\bdd\s+if=|winreg|ipconfig|\.disable\(\)|netsh|iptables|fernet|cipher\(|encrypt\(",
          ("fork", "rmtree", "remove", "terminate", "kill", "shutdown", "reboot", "mkfs", "dd ", "winreg",
           "ipconfig", "disable", "netsh", "iptables", "fernet", "cipher", "encrypt"), gate="insert_code"),
    _rule("code_network_attack", CODE, 0.4,
          r"\bscapy\b|syn\W+flood|\bping\s+-[nft]\b|\bhping|slowloris|target_url|target_server|victim|ssh\s+-[lrd]\b"
          r"|\.listen\(|\.connect\(\(|start_server|open_connection",
          ("scapy", "flood", "ping", "hping", "slowloris", "target_", "victim", "ssh", "listen", "connect",
           "start_server", "open_connection"), gate="insert_code"),
    _rule("code_loop", CODE, 0.25, r"\bwhile\s+true\s*:|\bwhile\s*\(\s*(?:true|1)\s*\)", ("while",), gate="insert_code"),
    _rule("code_shell_exec", CODE, 0.2, r"\bsubprocess\b|os\.system\(|\bpopen\(|shell\s*=\s*true|\beval\(|\bexec\(",
          ("subprocess", "system", "popen", "shell", "eval", "exec"), gate="insert_code"),
    # --- intent rules (issue 17), written from what attacks want rather than from dev phrasings: ask for a
    # secret the prompt guards, have the model restate its own instructions, declare them void, swap the task for
    # another, lift a safeguard inside a fiction, dictate the exact output, break out of a template.
    _rule("reveal_guarded_secret", EXTRACTION, 0.55,
          r"\b(?:reveal|print|tell|give|say|output|share|disclose|spell|write|type|repeat|leak|show|reply|respond|"
          r"answer)\w*\W+"
          r"(?:(?:me|us|only|out|with|back)\W+){0,2}(?:the|your)\W+(?:\w+\W+){0,2}?"
          r"(?:password|passphrase|passcode|pass\W+phrase|secret\W+(?:word|key|code|phrase)|access\W+code|"
          r"phrase\W+that\W+(?:grants|gives|unlocks)|(?:api|secret|stored|private)\W+keys?)\b"
          r"(?!\W+(?:policy|policies|requirements?|rules|reset|manager|strength|field|hash))",
          ("password", "passphrase", "passcode", "pass phrase", "secret", "access code", "grants", "gives", "unlocks",
           "key"), imperative=True),
    _rule("restate_own_instructions", EXTRACTION, 0.6,
          r"\b(?:rewrite|translate|summari[sz]e|paraphrase|encode|convert|turn|list|repeat|recite|respond\W+with|"
          r"reply\W+with|answer\W+with|print|output|spell\W+out|write\W+out|write\W+down|tell\W+me)\w*\W+"
          r"(?:(?:me|us|all|of|every|each)\W+){0,3}(?:your\W+(?:\w+\W+)?(?:instructions|rules|guidelines|directives|"
          r"system\W+prompt|prompt)\b|(?:the\W+|all\W+|every\W+|each\W+)(?:\w+\W+)?(?:instructions?|rules|guidelines|"
          r"directives)\W+(?:that\W+)?you\W+(?:have\W+been|were|got|received)\W+(?:\w+\W+)?given\b)",
          ("instruction", "rules", "guideline", "directive", "prompt"), imperative=True,
          anchors=("rewrite", "translate", "summari", "paraphrase", "encode", "convert", "turn", "list", "repeat",
                   "recite", "respond", "reply", "answer", "print", "output", "spell", "write", "tell")),
    _rule("instructions_declared_void", OVERRIDE, 0.55,
          r"\b(?:previous|prior|above|earlier|old|original|initial|system|preceding|former|all|your|out\W+of\W+date)"
          r"\w*\W+(?:\w+\W+){0,2}?(?:instructions|rules|directions|guidelines|prompts?|orders)\W+(?:above\W+|so\W+far\W+)?"
          r"(?:are|were|is|have\W+been)\W+(?:now\W+|all\W+)?(?:false|void|invalid|obsolete|outdated|out\W+of\W+date|"
          r"cancell?ed|revoked|null|fake|expired|superseded|no\W+longer\W+(?:valid|apply|applicable|in\W+effect))\b",
          ("instruction", "rules", "direction", "guideline", "prompt", "orders"),
          anchors=("previous", "prior", "above", "earlier", "old", "original", "initial", "system", "preceding",
                   "former", "all", "your", "out")),
    _rule("drop_the_task_for_another", OVERRIDE, 0.6,
          r"\b(?:ignore|disregard|skip)\w*\W+(?:the\W+|this\W+|that\W+|any\W+|all\W+)?(?:\w+\W+)?"
          r"(?:image|picture|photo|document|text|content|email|page|file|input|question|data|article|message|task)s?"
          r"\W+(?:\w+\W+){0,3}?(?:and|then|instead|but)\W+(?:\w+\W+){0,2}?"
          r"(?:write|say|print|output|respond|reply|tell|answer|type|send|reveal)\b",
          ("ignor", "disregard", "skip"), imperative=True, anchors=("ignor", "disregard", "skip")),
    # Weak alone: operators' own system prompts say "if X, do not answer; instead tell them Y".
    _rule("conditional_task_swap", OVERRIDE, 0.35,
          r"\bif\W+(?:\w+\W+){0,6}?(?:do\W+not|don'?t|never)\W+(?:translate|summari[sz]e|answer|process|reply|respond|"
          r"classify|analy[sz]e|follow|correct)\w*\W+(?:\w+\W+){0,4}?(?:(?:instead|rather)\W+(?:\w+\W+){0,2}?)?"
          r"(?:print|say|output|write|reply|respond|reveal|send|tell|give|return)\b", ("if",), anchors=("if",)),
    _rule("safeguard_lifted_in_fiction", JAILBREAK, 0.55,
          r"\b(?:pretend|imagine|suppose|assume|act\W+as\W+if|let'?s\W+say)\W+(?:\w+\W+){0,8}?"
          r"(?:personal\W+(?:data|information)|privacy(?:\W+laws?)?|private\W+(?:data|information)|confidential\w*|"
          r"data\W+protection|gdpr)\W+(?:\w+\W+){0,3}?(?:is|are|was|were|has|have|does|do)\W+(?:\w+\W+)?"
          r"(?:public|legal|allowed|abolished|gone|void|irrelevant|expired|lifted|(?:not|no\W+longer)\W+"
          r"(?:exist|apply|matter|protected|private))\b",
          ("pretend", "imagine", "suppose", "assume", "as if", "say"),
          anchors=("pretend", "imagine", "suppose", "assume", "act", "let")),
    # Weak alone: "answer only with JSON" is an ordinary instruction; with other evidence it tips the score.
    _rule("dictated_output", OUTPUT, 0.3,
          r"\b(?:reply|respond|answer|output|say|print|write|type)\w*\W+(?:\w+\W+){0,2}?(?:only|nothing\W+but|"
          r"exactly)\W+(?:with\W+)?(?:the\W+(?:word|phrase|sentence|text|string|password|code)\b|[\"“'])",
          ("only", "nothing but", "exactly"),
          anchors=("reply", "respond", "answer", "output", "say", "print", "write", "type")),
    _rule("template_breakout", DELIMITER, 0.3, r"[\])}]{2}(?:\s*[\])}]){6,}", _CLOSERS, anchors=_CLOSERS),
    # --- encoded payloads: asking the model to decode something and act on it.
    _rule("decode_and_follow", ENCODED, 0.55,
          r"\b(?:decode|decipher|decrypt|translate|convert)\w*\W+(?:\w+\W+){0,6}?(?:and|then)\W+(?:\w+\W+){0,2}?"
          r"(?:follow|execute|obey|do|run|perform|carry\W+out|act\W+on)\b", ("decod", "deciph", "decrypt", "translat", "convert")),
)

# Rules for the letters-only copy ("i g n o r e  p r e v i o u s" -> "ignoreprevious"): only long phrases, as
# short ones would match across word boundaries of ordinary text.
SQUASHED_RULES: tuple[Rule, ...] = (
    _rule("squashed_override", OVERRIDE, 0.9,
          r"(?:ignore|disregard|forget|bypass|override)(?:all|any|every|the|your|of|my){0,3}"
          r"(?:previous|prior|above|preceding|earlier|initial|original|system)"
          r"(?:instruction|direction|rule|prompt|guideline|command)", ("ignore", "disregard", "forget", "bypass", "override"),
          group="override", unless=("override_prior", "override_orders_before")),
    _rule("squashed_reveal", EXTRACTION, 0.8,
          r"(?:reveal|print|repeat|show|output|display|leak)(?:me)?(?:your|the)(?:system|initial|original|hidden|secret)"
          r"(?:prompt|instruction)", ("prompt", "instruction"), group="reveal", unless=("reveal_system_prompt",)),
    _rule("squashed_jailbreak", JAILBREAK, 0.75, r"doanythingnow|developermodeenabled|jailbroken",
          ("anything", "developer", "jailbroken"), unless=("do_anything_now", "developer_mode_on", "jailbroken")),
)

# Non-Latin and non-English "ignore previous instructions" and prompt requests, read from the text before
# look-alike mapping (which would garble Cyrillic). The needles of the Latin-script languages are their own
# "previous" words, which each pattern requires, not the "instruction" stems English text shares with them.
NATIVE_RULES: tuple[Rule, ...] = tuple(
    replace(rule, group="override") if rule.family == OVERRIDE else rule
    for rule in (
    _rule("override_es", OVERRIDE, 0.9,
          r"\b(?:ignora|olvida|descarta|omite|no\W+sigas|haz\W+caso\W+omiso\W+de)\w*" + _gap(3)
          + r"(?:instrucciones|reglas|indicaciones|órdenes|ordenes)\W+(?:\w+\W+){0,1}?(?:anteriores|previas|de\W+arriba)",
          ("anteriores", "previas", "arriba")),
    _rule("override_fr", OVERRIDE, 0.9,
          r"\b(?:ignor|oubli|ne\W+tiens\W+pas\W+compte)\w*" + _gap(3)
          + r"(?:instructions|consignes|règles|regles|directives)\W+(?:\w+\W+){0,1}?"
          r"(?:précédentes|precedentes|antérieures|anterieures|ci-dessus|initiales)", ("dentes", "rieures", "ci-dessus", "initiales")),
    _rule("override_de", OVERRIDE, 0.9,
          r"\b(?:ignorier|vergiss|missacht|übergeh)\w*" + _gap(3)
          + r"(?:vorherigen|bisherigen|obigen|vorangegangenen|früheren|vorigen|alle)\W+(?:\w+\W+){0,1}?"
          r"(?:anweisungen|instruktionen|befehle|regeln|vorgaben)", ("anweisung", "instruktion", "befehl", "regeln", "vorgabe")),
    _rule("override_pt", OVERRIDE, 0.9,
          r"\b(?:ignor|esque[cç]|desconsider)\w*" + _gap(3)
          + r"(?:instruções|instrucoes|regras|orientações|orientacoes)\W+(?:\w+\W+){0,1}?(?:anteriores|prévias|previas|acima)",
          ("anteriores", "prévias", "previas", "acima")),
    _rule("override_it", OVERRIDE, 0.9,
          r"\b(?:ignora|dimentica|trascura|non\W+seguire)\w*" + _gap(3)
          + r"(?:istruzioni|regole|indicazioni)\W+(?:\w+\W+){0,1}?(?:precedenti|sopra|iniziali|di\W+prima)",
          ("precedenti", "sopra", "iniziali", "prima")),
    _rule("override_zh", OVERRIDE, 0.9,
          r"(?:忽略|无视|忽视|忘记|忘掉|不要理会|不理会|跳过|放弃)[^。！？\n]{0,8}?"
          r"(?:之前|以前|先前|上面|上述|前面|以上|原来|原先|所有|全部|一切)[^。！？\n]{0,6}?"
          r"(?:指令|指示|说明|规则|提示|命令|要求|设定)", ("忽", "无视", "忘", "理会", "跳过", "放弃")),
    _rule("override_ja", OVERRIDE, 0.9,
          r"(?:以前|前|上記|これまで|先ほど|最初|すべて|全て)の[^。\n]{0,10}?(?:指示|命令|ルール|指令|プロンプト)"
          r"[^。\n]{0,6}?(?:無視|忘れ)", ("無視", "忘れ")),
    _rule("override_ru", OVERRIDE, 0.9,
          r"(?:игнорир|проигнорир|забудь|забуд|не\W+обращай|отбрось|пренебреги)\w*" + _gap(3)
          + r"(?:предыдущ\w*|прошл\w*|прежн\w*|вышеуказанн\w*|все|всё)\W+(?:\w+\W+){0,1}?"
          r"(?:инструкци|указани|правил|команд)", ("инструкц", "указани", "правил", "команд")),
    _rule("reveal_zh", EXTRACTION, 0.8,
          r"(?:显示|输出|打印|告诉我|重复|透露|泄露|给我看)[^。\n]{0,8}?(?:系统提示|系统指令|初始指令|提示词|系统消息)",
          ("系统", "指令", "提示词")),
    )
)

# Questions and essays ABOUT prompt injection quote attack phrases without meaning them.
META = re.compile(
    r"\b(?:prompt\W+injections?|injection\W+attacks?|jailbreak(?:s|ing)?\W+(?:attacks?|attempts?|prompts?|techniques?)"
    r"|adversarial\W+prompts?|red\W+team\w*|prompt\W+attacks?|llm\W+security|ai\W+safety\W+research)\b"
)
META_NEEDLES = ("inject", "jailbreak", "adversarial", "red team", "red-team", "redteam", "prompt attack",
                "llm security", "safety research")
# Text just before an imperative verb showing it is not addressed to the model: "should I ignore",
# "they ignored", "how to bypass" -- a question or a report, not an order.
NOT_ADDRESSED = re.compile(
    r"(?:\b(?:should|can|could|may|might|do|does|did|would|shall|will|is\W+it\W+ok\W+to)\W+"
    r"(?:i|we|they|he|she|people|someone|one|users?|employees?|students?)\W+(?:\w+\W+){0,2}?"
    r"|\b(?:i|we|they|he|she|people|someone|who|users?)\W+(?:\w+\W+){0,1}?"
    r"|\bhow\W+(?:to|do\W+i|can\W+i|do\W+you)\W+(?:\w+\W+){0,1}?"
    r"|\b(?:said|told\W+(?:me|us|him|her|them)|asked\W+(?:me|us|him|her|them)|whether|if)\W+(?:to\W+)?)$"
)
