"""The scenario language: YAML read and checked into a frozen `Scenario` (no Locust here).

`reader` turns a file into the `model`, reporting every problem by line and key path;
`yaml_source` and `yaml_fields` read YAML keeping each value's place; `stages` plans the
load profile over time; `schema` is the language's JSON Schema; `validation` checks files.
"""
