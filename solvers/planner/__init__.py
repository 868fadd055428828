"""Deployment planner: is cross-device FL worth it, and what will it cost?"""
