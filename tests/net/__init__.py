"""Tests of netcfg.net: templates."""
