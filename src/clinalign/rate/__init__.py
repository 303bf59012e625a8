"""clinalign.rate"""
