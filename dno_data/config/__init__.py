"""Stage configs: options declared once on dataclass fields, checked when a config is built.

  options.py   Option, opt, group, the checks (check(value) raises ValueError with the reason)
  base.py      Config (the checks on construction), the flat view (from_options, to_options, to_argv)
  groups.py    the groups several stages share: Api, ModelLoading, Sampling, TeacherCall, JudgeSettings
  run_file.py  the run config file (--config run.toml): a table per command

Standard library only: importing a config never loads torch, pyarrow or DuckDB.
"""

from .base import Config, Flat, OptionError, flat_fields, flat_of, from_options, option_names, replace, to_argv, to_options
from .options import (CHANGES_OUTPUT, GROUP, OPTION, UNSET, Group, Option, above, all_of, as_tuple, at_least, comma_list,
                      finite, group, in_range, local_path, nonempty, one_of, opt, output_file, output_folder, seed_list,
                      url)

__all__ = ["CHANGES_OUTPUT", "GROUP", "OPTION", "UNSET", "Config", "Flat", "Group", "Option", "OptionError", "above",
           "all_of", "as_tuple", "at_least", "comma_list", "finite", "flat_fields", "flat_of", "from_options", "group",
           "in_range", "local_path", "nonempty", "one_of", "opt", "option_names", "output_file", "output_folder",
           "replace", "seed_list", "to_argv", "to_options", "url"]
