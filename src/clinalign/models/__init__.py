"""clinalign.models"""
