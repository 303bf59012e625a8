"""clinalign.study"""
