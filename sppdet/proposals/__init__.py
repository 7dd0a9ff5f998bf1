"""sppdet.proposals"""
