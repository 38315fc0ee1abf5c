"""Architecture knowledge, kept as data: which tensors are norms, and what each one is.

- `families.py`: the built-in family tables (model_type -> rules), each citing its source;
- `vocab.py`: the structure of a name (prefix, block, MTP module, sublayer indices, vision
  tower) and the naming vocabularies common across families (Hugging Face, DeepSeek/Meta
  original, OLMo-core, GPT-2/Falcon, BERT, Megatron-Core, MTP);
- `config.py`: what config.json says (widths, depths, zero-centred flags, block type);
- `rules.py`: the rule format shared by the built-ins and user rules files, and the index that
  matches each name once against all of them;
- `classify.py`: `classify(tensors, config)`, the entry point;
- `userrules.py`: `load_rules(path)` and `rules_from_pyproject(table, where)`;
- `ruledump.py`: `dump_rules(families)`, the rules file a table is written back as;
- `structure.py`: towers, encoder/decoder stacks, where a stack of blocks ends.
"""

from __future__ import annotations

from normscope.arch.classify import (
    Classification,
    choose_family,
    classify,
    default_group,
    present_leaves,
    split_param,
)
from normscope.arch.config import ConfigFacts, read_config
from normscope.arch.families import FAMILIES, FAMILY_BY_NAME
from normscope.arch.ruledump import dump_rules
from normscope.arch.rules import Family, NormRule, RuleSet
from normscope.arch.userrules import load_rules, rules_from_pyproject
from normscope.arch.vocab import VOCABULARIES, VOCABULARY_BY_NAME, Site, parse_site

__all__ = [
    "FAMILIES",
    "FAMILY_BY_NAME",
    "VOCABULARIES",
    "VOCABULARY_BY_NAME",
    "Classification",
    "ConfigFacts",
    "Family",
    "NormRule",
    "RuleSet",
    "Site",
    "choose_family",
    "classify",
    "default_group",
    "dump_rules",
    "load_rules",
    "parse_site",
    "present_leaves",
    "read_config",
    "rules_from_pyproject",
    "split_param",
]
