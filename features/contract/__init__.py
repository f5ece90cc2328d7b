"""The data contract: what a CRM export must look like, how its names map, how it is read and checked.

``schema`` (tables, columns, canonical names), ``mapping`` (a CRM's own stage/role names),
``io`` (files), ``cells`` (parsing a column), ``rules`` (table and cross-table rules), ``check``
(``check_tables``: raw tables -> ``Export`` or violations), ``violations`` (what is reported),
``load`` (an export folder) and ``report`` (``dealrisk validate``).
"""
