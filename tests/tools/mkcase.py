"""Write a rule case folder from Python data (a convenience for authors of cases; the
folders are the source of truth and are committed).

    python -m tests.tools.mkcase RULE CASE --description "..." --outcome fail \
        --state state.yaml --object object.yaml [--old old.yaml] [--message TEXT]...
"""
