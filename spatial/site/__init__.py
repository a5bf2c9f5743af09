"""Site checks: constraints, planning conditions, terrain and regional-assessment coverage of a site."""

from spatial.site.check import SiteCheck, check_site
from spatial.site.request import SiteRequest, parse_json, parse_request

__all__ = ["SiteCheck", "SiteRequest", "check_site", "parse_json", "parse_request"]
