"""Tests of sppdet.data (mirrors sppdet/data/)."""
