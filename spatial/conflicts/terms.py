"""The conflict register's vocabulary: severities, statuses and export formats.

Apart from the modules that act on them (rules, lifecycle, export), so that the command line can
offer them as choices without importing pandas, SQLAlchemy or openpyxl.
"""

SEVERITIES = ("critical", "major", "minor")
STATUSES = ("open", "assigned", "resolved", "accepted", "closed")
SETTABLE = ("assigned", "resolved", "accepted")  # by hand; "closed" is the register's
EXPORT_FORMATS = ("gpkg", "geojson", "xlsx")
