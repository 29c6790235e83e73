"""Deployable files from a trained net: the deploy form, the format writers, and loading back.

Named ``exporting`` rather than ``export`` so that ``netcfg.export`` stays the public
function (a subpackage of that name would replace it on ``netcfg`` once imported).
"""

from netcfg.exporting.api import FORMATS, ExportResult, export
from netcfg.exporting.deploy import Deploy, DeployModule, deploy_form
from netcfg.exporting.load import load_net_with_weights, read_net

__all__ = ["FORMATS", "Deploy", "DeployModule", "ExportResult", "deploy_form", "export", "load_net_with_weights", "read_net"]
