"""sppdet.evaluation"""
