"""matrices"""
