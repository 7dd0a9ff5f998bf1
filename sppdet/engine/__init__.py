"""sppdet.engine"""
