"""GET /v1/models: the served model and every alias, with the search an alias applies."""

from fastapi import APIRouter, Request

from server.protocol import ModelList
from server.serving import state_of

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=state_of(request).model_cards())
