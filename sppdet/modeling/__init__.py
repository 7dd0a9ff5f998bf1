"""sppdet.modeling"""
