"""sppdet.layers"""
