"""sppdet.benchmarks"""
