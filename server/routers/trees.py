"""GET /v1/search/trees/{tree_id}: a stored search tree as JSON."""

from typing import Any

from fastapi import APIRouter, Request

from server.errors import APIError
from server.protocol import ErrorResponse
from server.serving import state_of
from server.tree_store import is_tree_id

router = APIRouter()


@router.get("/v1/search/trees/{tree_id}", response_model=dict[str, Any],
            responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def get_tree(tree_id: str, request: Request) -> dict[str, Any]:
    if not is_tree_id(tree_id):
        raise APIError(f"Not a tree id: {tree_id!r}.", 400, "tree_id")
    entry = await state_of(request).tree_store.get(tree_id)
    if entry is None:
        raise APIError(f"No stored tree {tree_id}: it expired, was evicted, or was never grown here.", 404, "tree_id")
    return {"id": tree_id, "object": "search.tree", **entry}
